/** One `<response>` of a WebDAV PROPFIND multistatus (RFC 4918 §14.16). */
export interface MultistatusEntry {
  /** As sent: an absolute path or URL, percent-encoded, entities decoded. */
  readonly href: string;
  readonly isCollection: boolean;
  readonly size: number | undefined;
  readonly modified: Date | undefined;
}

/**
 * Reads the few properties a snapshot store needs (href, resourcetype,
 * getcontentlength, getlastmodified) from a multistatus body. Deliberately a
 * tolerant scanner rather than a full XML parser (no dependency for four
 * elements): it ignores namespace prefixes (`D:`, `d:`, `lp1:`, none), and a
 * property missing or in a non-200 propstat simply comes back undefined.
 */
export function parseMultistatus(xml: string): MultistatusEntry[] {
  const entries: MultistatusEntry[] = [];
  for (const match of xml.matchAll(/<(?:[\w.-]+:)?response\b[^>]*>([\s\S]*?)<\/(?:[\w.-]+:)?response\s*>/g)) {
    const body = match[1] ?? '';
    const href = elementText(body, 'href');
    if (href === undefined) continue;
    const resourceType = elementText(body, 'resourcetype') ?? '';
    const length = elementText(body, 'getcontentlength');
    const modified = elementText(body, 'getlastmodified');
    const size = length === undefined || length.trim() === '' ? undefined : Number(length.trim());
    const date = modified === undefined ? undefined : new Date(modified.trim());
    entries.push({
      href: decodeEntities(href.trim()),
      isCollection: /<(?:[\w.-]+:)?collection\b/.test(resourceType),
      size: size !== undefined && Number.isFinite(size) ? size : undefined,
      modified: date !== undefined && !Number.isNaN(date.getTime()) ? date : undefined,
    });
  }
  return entries;
}

/** Text content of the first element with this local name; "" for `<x/>`, undefined when absent. */
function elementText(xml: string, localName: string): string | undefined {
  const pattern = new RegExp(
    `<(?:[\\w.-]+:)?${localName}\\b[^>]*?(?:/>|>([\\s\\S]*?)</(?:[\\w.-]+:)?${localName}\\s*>)`,
  );
  const match = pattern.exec(xml);
  return match === null ? undefined : (match[1] ?? '');
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_all, entity: string) => {
    if (entity.startsWith('#x')) return String.fromCodePoint(parseInt(entity.slice(2), 16));
    if (entity.startsWith('#')) return String.fromCodePoint(parseInt(entity.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[entity] ?? '';
  });
}
