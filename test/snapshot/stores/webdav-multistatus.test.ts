import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseMultistatus } from '../../../src/snapshot/stores/webdav-multistatus.ts';

describe('parseMultistatus', () => {
  it('reads rclone / golang.org/x/net/webdav style answers (D: prefix)', () => {
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?><D:multistatus xmlns:D="DAV:">' +
      '<D:response><D:href>/x/y/</D:href><D:propstat><D:prop><D:resourcetype><D:collection xmlns:D="DAV:"/></D:resourcetype>' +
      '<D:getlastmodified>Fri, 27 Nov 2026 08:38:55 GMT</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>' +
      '<D:response><D:href>/x/y/snap%201.db</D:href><D:propstat><D:prop><D:resourcetype></D:resourcetype>' +
      '<D:getcontentlength>309</D:getcontentlength><D:getlastmodified>Fri, 27 Nov 2026 08:38:55 GMT</D:getlastmodified>' +
      '</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>';
    assert.deepEqual(parseMultistatus(xml), [
      { href: '/x/y/', isCollection: true, size: undefined, modified: new Date('2026-11-27T08:38:55Z') },
      {
        href: '/x/y/snap%201.db',
        isCollection: false,
        size: 309,
        modified: new Date('2026-11-27T08:38:55Z'),
      },
    ]);
  });

  it('reads Apache mod_dav / Nextcloud style answers (lowercase and default namespaces, 404 propstats, entities)', () => {
    const xml = `<?xml version="1.0" encoding="utf-8"?>
      <multistatus xmlns="DAV:">
        <response>
          <href>https://dav.example/remote.php/dav/files/u/a&amp;b.db</href>
          <propstat><prop><getcontentlength>12</getcontentlength><resourcetype/></prop><status>HTTP/1.1 200 OK</status></propstat>
          <propstat><prop><getlastmodified/></prop><status>HTTP/1.1 404 Not Found</status></propstat>
        </response>
        <d:response xmlns:d="DAV:"><d:href>/sub/</d:href><d:propstat><d:prop>
          <d:resourcetype><d:collection/></d:resourcetype></d:prop></d:propstat></d:response>
      </multistatus>`;
    assert.deepEqual(parseMultistatus(xml), [
      {
        href: 'https://dav.example/remote.php/dav/files/u/a&b.db',
        isCollection: false,
        size: 12,
        modified: undefined,
      },
      { href: '/sub/', isCollection: true, size: undefined, modified: undefined },
    ]);
  });

  it('returns nothing for an empty or foreign body', () => {
    assert.deepEqual(parseMultistatus(''), []);
    assert.deepEqual(parseMultistatus('<html>not dav</html>'), []);
  });
});
