// Builds Flowise's own PostgreSQL schema the way Flowise does when it starts: a typeorm DataSource with
// the package's `postgresMigrations` list, then `runMigrations({ transaction: 'each' })` (see
// dist/index.js, App.initDatabase). Flowise has no schema setting: its tables go to the first schema of
// the connecting role's search_path.
//
// Usage: NODE_PATH=<install>/node_modules node flowise_migrate.js <install>/flowise-<version>
// with DATABASE_HOST, DATABASE_PORT, DATABASE_NAME, DATABASE_USER, DATABASE_PASSWORD as for Flowise;
// or `... flowise_migrate.js <install>/flowise-<version> --list sqlite|postgres` to print the names of
// the migrations that version ships for that database type (JSON).
'use strict';
const path = require('path');
const Module = require('module');

const flowise = path.resolve(process.argv[2]);

// Flowise 3's encryption helper (used by one enterprise migration only when organisations already
// exist, never on an empty database) imports the whole server; give it a stand-in that refuses to work.
const load = Module._load;
Module._load = function (request, parent, isMain) {
    if (request === '../../utils' && parent && parent.filename.endsWith(path.join('enterprise', 'utils', 'encryption.util.js'))) {
        return { getEncryptionKey: async () => { throw new Error('not available while building the schema') } };
    }
    return load.apply(this, arguments);
};

const { DataSource } = require('typeorm');

function migrationsFor(databaseType) {
    return require(path.join(flowise, 'dist', 'database', 'migrations', databaseType))[`${databaseType}Migrations`];
}

async function main() {
    const dataSource = new DataSource({
        type: 'postgres',
        host: process.env.DATABASE_HOST,
        port: parseInt(process.env.DATABASE_PORT || '5432'),
        username: process.env.DATABASE_USER,
        password: process.env.DATABASE_PASSWORD,
        database: process.env.DATABASE_NAME,
        synchronize: false,
        migrationsRun: false,
        entities: [],
        migrations: migrationsFor('postgres'),
    });
    await dataSource.initialize();
    // Flowise's migrations call uuid_generate_v4() (the uuid-ossp extension, which typeorm creates for
    // Flowise's entities). Where the server has no uuid-ossp, the same random v4 UUIDs from core.
    try {
        await dataSource.query('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"');
    } catch (error) {
        await dataSource.query("CREATE OR REPLACE FUNCTION uuid_generate_v4() RETURNS uuid LANGUAGE sql AS 'SELECT gen_random_uuid()'");
    }
    const ran = await dataSource.runMigrations({ transaction: 'each' });
    console.log(`ran ${ran.length} migrations`);
    await dataSource.destroy();
}

if (process.argv[3] === '--list') {
    console.log(JSON.stringify(migrationsFor(process.argv[4]).map((migration) => new migration().name || migration.name)));
} else {
    main().catch((error) => { console.error(error); process.exit(1); });
}
