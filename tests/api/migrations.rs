//! The migrations as a DBA reads them: each table, view, type, trigger and routine is created by
//! one migration, the one `docs/dba.md` (section Migrations) names for it, and no routine is
//! left behind in an old signature beside its new one.

use std::collections::{BTreeMap, BTreeSet};

use crate::helpers::TestDb;

/// Every `(kind, name)` a migration creates with a plain `CREATE` (not `CREATE OR REPLACE`),
/// and every name it drops.
struct Statements {
    created: BTreeSet<String>,
    dropped: BTreeSet<String>,
}

fn statements(sql: &str) -> Statements {
    let mut created = BTreeSet::new();
    let mut dropped = BTreeSet::new();
    for line in sql.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (verb, rest) = match words.split_first() {
            Some((verb, rest)) if *verb == "CREATE" || *verb == "DROP" => (*verb, rest),
            _ => continue,
        };
        if rest.first() == Some(&"OR") {
            continue; // CREATE OR REPLACE changes an object, it does not create it
        }
        let rest: Vec<&str> = rest.iter().copied().filter(|w| *w != "UNIQUE").collect();
        let Some(name) = rest.get(1) else { continue };
        let name = name.split('(').next().unwrap_or(name).to_owned();
        if verb == "CREATE" {
            created.insert(name);
        } else {
            dropped.insert(name);
        }
    }
    Statements { created, dropped }
}

/// The rows of the table under `## Migrations` in docs/dba.md: file name → the backticked
/// names of its second cell.
fn documented(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Migrations\n"))
        .expect("docs/dba.md has a section Migrations");
    let mut rows = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let file = cells[1].trim_matches('`').to_owned();
        let names = cells[2].split('`').skip(1).step_by(2).map(str::to_owned);
        rows.insert(file, names.collect());
    }
    rows
}

/// The names of every table, view, enum type, trigger and routine of the migrated schema.
async fn schema_objects(db: &TestDb) -> BTreeSet<String> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = 'latchkey'::regnamespace AND c.relkind IN ('r', 'v')
           AND c.relname <> '_sqlx_migrations'
         UNION ALL
         SELECT t.typname::text FROM pg_type t
         WHERE t.typnamespace = 'latchkey'::regnamespace AND t.typtype = 'e'
         UNION ALL
         SELECT g.tgname::text FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
         WHERE c.relnamespace = 'latchkey'::regnamespace AND NOT g.tgisinternal
         UNION ALL
         SELECT p.proname::text FROM pg_proc p
         WHERE p.pronamespace = 'latchkey'::regnamespace",
    )
    .fetch_all(&db.pool)
    .await
    .expect("catalog");
    names.into_iter().collect()
}

#[tokio::test]
async fn every_schema_object_is_created_once_by_the_migration_the_dba_guide_names() {
    let db = TestDb::new().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/dba.md")).expect("docs/dba.md");
    let rows = documented(&doc);

    let mut files: Vec<String> = std::fs::read_dir(format!("{root}/migrations"))
        .expect("migrations/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".sql"))
        .collect();
    files.sort();
    let listed: Vec<&String> = rows.keys().collect();
    assert_eq!(
        listed,
        files.iter().collect::<Vec<_>>(),
        "docs/dba.md lists every migration"
    );

    // The first migration that creates a name is its creator; a later one may create it
    // again only after dropping it (a change CREATE OR REPLACE cannot make).
    let mut creator: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let sql = std::fs::read_to_string(format!("{root}/migrations/{file}")).expect("read");
        let s = statements(&sql);
        for name in s.created {
            match creator.get(&name) {
                Some(first) if !s.dropped.contains(&name) => {
                    problems.push(format!("{name}: created by {first} and again by {file}"))
                }
                Some(_) => {}
                None => {
                    creator.insert(name, file.clone());
                }
            }
        }
    }

    let objects = schema_objects(&db).await;
    assert!(objects.len() >= 25, "the schema's objects: {objects:?}");
    for name in &objects {
        let Some(file) = creator.get(name) else {
            problems.push(format!("{name}: no migration creates it with CREATE"));
            continue;
        };
        let named_in: Vec<&String> = rows
            .iter()
            .filter(|(_, names)| names.contains(name))
            .map(|(f, _)| f)
            .collect();
        if named_in != vec![file] {
            problems.push(format!(
                "{name}: created by {file}, named in docs/dba.md on {named_in:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn no_routine_is_left_behind_in_an_old_signature() {
    let db = TestDb::new().await;
    let overloaded: Vec<String> = sqlx::query_scalar(
        "SELECT string_agg(p.oid::regprocedure::text, ', ')
         FROM pg_proc p
         WHERE p.pronamespace = 'latchkey'::regnamespace
         GROUP BY p.proname
         HAVING count(*) > 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("catalog");
    assert!(
        overloaded.is_empty(),
        "routines with more than one signature (a changed signature must DROP the old one): \
         {overloaded:?}"
    );
}
