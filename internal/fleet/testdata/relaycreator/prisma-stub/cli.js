#!/usr/bin/env node
// Stands in for Prisma's CLI: `prisma generate` does nothing; `prisma migrate deploy` applies
// prisma/migrations/<name>/migration.sql in name order against DATABASE_URL (the environment, else ./.env), each
// once, recorded in _prisma_migrations as Prisma does, and fails with the database's error (P3018).
const fs = require("fs");
const path = require("path");
const [cmd, sub] = process.argv.slice(2);
if (cmd === "generate") { console.log("prisma fixture: client generated"); process.exit(0); }
if (cmd !== "migrate" || sub !== "deploy") { console.error("prisma fixture: unknown command " + process.argv.slice(2).join(" ")); process.exit(1); }
let url = process.env.DATABASE_URL;
if (!url && fs.existsSync(".env")) {
  const m = fs.readFileSync(".env", "utf8").match(/^DATABASE_URL="?([^"\n]*)"?$/m);
  if (m) url = m[1];
}
if (!url) { console.error("Error: Environment variable not found: DATABASE_URL."); process.exit(1); }
const mysql = require("mysql2/promise");
(async () => {
  const db = await mysql.createConnection({ uri: url, multipleStatements: true });
  await db.query("CREATE TABLE IF NOT EXISTS _prisma_migrations (migration_name VARCHAR(255) PRIMARY KEY, finished_at DATETIME NOT NULL)");
  const dir = path.join("prisma", "migrations");
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => fs.existsSync(path.join(dir, n, "migration.sql"))).sort() : [];
  const [rows] = await db.query("SELECT migration_name FROM _prisma_migrations");
  const done = new Set(rows.map((r) => r.migration_name));
  let applied = 0;
  for (const n of names.filter((n) => !done.has(n))) {
    try {
      await db.query(fs.readFileSync(path.join(dir, n, "migration.sql"), "utf8"));
    } catch (e) {
      console.error(`Error: P3018 A migration failed to apply. Migration name: ${n}. Database error: ${e.message}`);
      process.exit(1);
    }
    await db.query("INSERT INTO _prisma_migrations VALUES (?, NOW())", [n]);
    console.log(`Applying migration \`${n}\``);
    applied++;
  }
  console.log(applied ? `All migrations have been successfully applied (${applied}).` : "No pending migrations to apply.");
  await db.end();
})().catch((e) => { console.error("Error: " + e.message); process.exit(1); });
