/**
 * The bookkeeping tables of common migration tools, excluded from replication
 * by default (`migration_tables`). DDL is not replicated, so every node runs its
 * own migrations; their bookkeeping must stay per node, or a node sees another
 * node's migrations as done (skipping its own DDL) or its lock as taken (knex:
 * "Migration table is already locked").
 */
export const MIGRATION_TABLES: readonly string[] = [
  // knex
  'knex_migrations',
  'knex_migrations_lock',
  // Prisma
  '_prisma_migrations',
  // Django
  'django_migrations',
  // Alembic (SQLAlchemy)
  'alembic_version',
  // Rails, Ecto, golang-migrate, dbmate
  'schema_migrations',
  'ar_internal_metadata',
  // Sequelize / umzug
  'SequelizeMeta',
  // Kysely
  'kysely_migration',
  'kysely_migration_lock',
  // Drizzle, Diesel, sqlx, MikroORM
  '__drizzle_migrations',
  '__diesel_schema_migrations',
  '_sqlx_migrations',
  'mikro_orm_migrations',
  // Flyway, Liquibase, goose, Doctrine, Phinx, refinery, Atlas
  'flyway_schema_history',
  'DATABASECHANGELOG',
  'DATABASECHANGELOGLOCK',
  'goose_db_version',
  'doctrine_migration_versions',
  'phinxlog',
  'refinery_schema_history',
  'atlas_schema_revisions',
];
