// Reads every row of Flowise's own entities (the package's dist/database/entities, as Flowise's server
// reads them through typeorm) from SQLite or from PostgreSQL, and prints them as one JSON document:
// {EntityName: [row, ...]} sorted by primary key, dates as ISO text. What Flowise would see.
//
// Usage (TZ=UTC): NODE_PATH=<install>/node_modules node flowise_read.js <install>/flowise-<version> sqlite <file>
//              or ... flowise_read.js <install>/flowise-<version> postgres   (DATABASE_* as for Flowise)
'use strict';
const fs = require('fs');
const path = require('path');
const { DataSource } = require('typeorm');

const [flowise, databaseType, file] = process.argv.slice(2);
const { entities } = require(path.join(path.resolve(flowise), 'dist', 'database', 'entities'));

function options() {
    if (databaseType === 'sqlite') {
        return { type: 'sqljs', database: fs.readFileSync(file), autoSave: false };
    }
    return {
        type: 'postgres', host: process.env.DATABASE_HOST, port: parseInt(process.env.DATABASE_PORT || '5432'),
        username: process.env.DATABASE_USER, password: process.env.DATABASE_PASSWORD,
        database: process.env.DATABASE_NAME,
    };
}

async function main() {
    const dataSource = new DataSource({ ...options(), synchronize: false, migrationsRun: false, entities: Object.values(entities) });
    await dataSource.initialize();
    const seen = {};
    for (const [name, entity] of Object.entries(entities)) {
        const metadata = dataSource.getMetadata(entity);
        const tables = await dataSource.query(databaseType === 'sqlite'
            ? `SELECT name FROM sqlite_master WHERE type = 'table' AND name = '${metadata.tableName}'`
            : `SELECT table_name FROM information_schema.tables WHERE table_name = '${metadata.tableName}' AND table_schema = current_schema()`);
        if (tables.length === 0) continue;  // an entity of a table this database does not have
        const order = Object.fromEntries(metadata.primaryColumns.map((column) => [column.propertyName, 'ASC']));
        seen[name] = await dataSource.getRepository(entity).find({ order });
    }
    console.log(JSON.stringify(seen));
    await dataSource.destroy();
}

main().catch((error) => { console.error(error); process.exit(1); });
