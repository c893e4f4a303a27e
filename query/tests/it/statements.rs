//! The statement parser, statement by statement, with ClickHouse's syntax and
//! error codes as the reference.

use query::parse::{AlterCommand, ChType, DefaultKind, PartitionSpec, Statement, parse_statement};
use storage::Engine;

fn create(sql: &str) -> query::parse::CreateTable {
    match parse_statement(sql).unwrap() {
        Statement::CreateTable(t) => *t,
        other => panic!("not a CREATE TABLE: {other:?}"),
    }
}

fn code(sql: &str) -> u32 {
    let e = match parse_statement(sql) {
        Err(e) => e,
        Ok(Statement::CreateTable(t)) => t.table_def().unwrap_err(),
        Ok(other) => panic!("{sql} parsed: {other:?}"),
    };
    assert!(e.to_string().starts_with(&format!("Code: {}. DB::Exception: ", e.code)), "{e}");
    e.code
}

#[test]
fn create_table_in_clickhouse_clause_order() {
    let t = create(
        "CREATE TABLE IF NOT EXISTS db.hits ON CLUSTER c (
            event_date Date, event_time DateTime, user_id UInt64, counter_id UInt32,
            url String CODEC(ZSTD(1)) COMMENT 'the page', region UInt16 DEFAULT 0, duration UInt32,
            revenue Float64, is_mobile UInt8, day UInt8 MATERIALIZED toDayOfMonth(event_date),
            host String ALIAS domain(url)
        ) ENGINE = MergeTree
        PARTITION BY toYYYYMM(event_date)
        ORDER BY (counter_id, event_date, user_id)
        SETTINGS index_granularity = 4096, storage_policy = 'default';",
    );
    assert_eq!((t.database.as_deref(), t.name.as_str(), t.if_not_exists), (Some("db"), "hits", true));
    assert_eq!(t.columns.len(), 11);
    let url = &t.columns[4];
    assert_eq!((url.codec.as_deref(), url.comment.as_deref()), (Some("(ZSTD(1))"), Some("the page")));
    assert_eq!(t.columns[5].default, Some((DefaultKind::Default, "0".into())));
    assert_eq!(t.columns[9].default, Some((DefaultKind::Materialized, "toDayOfMonth(event_date)".into())));
    // ALIAS columns are computed, not stored.
    assert_eq!(t.schema().fields().len(), 10);
    let mut def = t.clone();
    def.columns.retain(|c| c.name != "day"); // toDayOfMonth is not a storage function
    let d = def.table_def().unwrap();
    assert_eq!(d.engine, Engine::MergeTree);
    assert_eq!(d.partition_by.as_deref(), Some("toYYYYMM(event_date)"));
    assert_eq!(d.order_by, vec!["counter_id", "event_date", "user_id"]);
    assert_eq!(d.settings.index_granularity, 4096);
}

#[test]
fn every_engine_and_its_arguments() {
    let base = "CREATE TABLE t (k UInt64, ver UInt32, del UInt8, sign Int8, a Int64, b Float64, \
                u AggregateFunction(uniqExact, UInt64)) ENGINE = ";
    let engine = |e: &str| create(&format!("{base}{e} ORDER BY k")).table_def().unwrap().engine;
    assert_eq!(engine("MergeTree()"), Engine::MergeTree);
    assert_eq!(
        engine("ReplacingMergeTree(ver, del)"),
        Engine::Replacing { version: Some("ver".into()), is_deleted: Some("del".into()) }
    );
    assert_eq!(engine("ReplacingMergeTree"), Engine::Replacing { version: None, is_deleted: None });
    assert_eq!(engine("SummingMergeTree((a, b))"), Engine::Summing { columns: Some(vec!["a".into(), "b".into()]) });
    assert_eq!(engine("SummingMergeTree(a)"), Engine::Summing { columns: Some(vec!["a".into()]) });
    assert_eq!(engine("AggregatingMergeTree"), Engine::Aggregating);
    assert_eq!(engine("CollapsingMergeTree(sign)"), Engine::Collapsing { sign: "sign".into() });
    // Replication is built in: the ZooKeeper path and replica name are dropped.
    assert_eq!(
        engine("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/t', '{replica}', ver)"),
        Engine::Replacing { version: Some("ver".into()), is_deleted: None }
    );
    let t = create(&format!("{base}AggregatingMergeTree ORDER BY k"));
    assert_eq!(t.columns[6].ty.to_string(), "AggregateFunction(uniqExact, UInt64)");
}

#[test]
fn primary_key_and_order_by_rules() {
    let d = create("CREATE TABLE t (a UInt8, b UInt8) ENGINE = MergeTree PRIMARY KEY a ORDER BY (a, b)")
        .table_def()
        .unwrap();
    assert_eq!(d.order_by, vec!["a", "b"]);
    let d = create("CREATE TABLE t (a UInt8, b UInt8, PRIMARY KEY (a, b)) ENGINE = MergeTree").table_def().unwrap();
    assert_eq!(d.order_by, vec!["a", "b"], "PRIMARY KEY alone is the sorting key");
    let d = create("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY tuple()").table_def().unwrap();
    assert!(d.order_by.is_empty());
    assert_eq!(code("CREATE TABLE t (a UInt8, b UInt8) ENGINE = MergeTree PRIMARY KEY b ORDER BY (a, b)"), 36);
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = MergeTree"), 36);
}

#[test]
fn create_as_table_and_as_select() {
    let t = create("CREATE TABLE t2 AS db.t ENGINE = MergeTree ORDER BY a");
    assert_eq!(t.as_table, Some((Some("db".into()), "t".into())));
    assert!(t.engine.is_some() && t.columns.is_empty());
    let t = create("CREATE TABLE t3 ENGINE = MergeTree ORDER BY a AS SELECT 1 AS a");
    assert_eq!(t.as_select.as_deref(), Some("SELECT 1 AS a"));
    let t =
        create("CREATE TABLE n (a Nullable(String), b String NULL, c UInt8 NOT NULL) ENGINE = MergeTree ORDER BY c");
    assert!(matches!(t.columns[1].ty, ChType::Nullable(_)));
    assert!(t.schema().field(0).is_nullable() && !t.schema().field(2).is_nullable());
}

#[test]
fn create_table_errors_carry_clickhouse_codes() {
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = Memory"), 56);
    assert_eq!(code("CREATE TABLE t (a Uint8) ENGINE = MergeTree ORDER BY a"), 50);
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS no_such_thing = 1"), 115);
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS index_granularity = 'x'"), 36);
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY b"), 36, "unknown column in the key");
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a PARTITION BY nope(a)"), 36);
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = CollapsingMergeTree ORDER BY a"), 42);
    assert_eq!(code("CREATE TABLE t (a UInt8 ENGINE = MergeTree ORDER BY a"), 62);
    assert_eq!(code("CREATE TABLE t () ENGINE = MergeTree ORDER BY a"), 62);
    assert_eq!(code("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS"), 62);
    let e = parse_statement("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS 5 = 1").unwrap_err();
    assert!(e.message.contains("failed at position 65 ('5'): expected identifier"), "{e}");
    // An expression's end is found by clause keywords, so trailing junk lands
    // in the expression and is reported when the key is compiled.
    let e = create("CREATE TABLE t (a UInt8) ENGINE = MergeTree ORDER BY a GARBAGE").table_def().unwrap_err();
    assert!(e.message.contains("a GARBAGE"), "{e}");
}

#[test]
fn alter_delete_update_drop_partition() {
    let st = parse_statement(
        "ALTER TABLE db.t UPDATE revenue = revenue * 2, note = 'a, b' WHERE region = 7, DELETE WHERE x IN (1, 2), \
         DROP PARTITION 202306, DROP PARTITION ID 'all' SETTINGS mutations_sync = 2",
    )
    .unwrap();
    let Statement::Alter { table, commands, settings } = st else { panic!() };
    assert_eq!(table, (Some("db".into()), "t".into()));
    assert_eq!(
        commands,
        vec![
            AlterCommand::Update {
                assignments: vec![("revenue".into(), "revenue * 2".into()), ("note".into(), "'a, b'".into())],
                predicate: "region = 7".into()
            },
            AlterCommand::Delete { predicate: "x IN (1, 2)".into() },
            AlterCommand::DropPartition(PartitionSpec::Value("202306".into())),
            AlterCommand::DropPartition(PartitionSpec::Id("all".into())),
        ]
    );
    assert_eq!(settings, vec![("mutations_sync".into(), "2".into())]);
    assert_eq!(code("ALTER TABLE t MODIFY COLUMN a UInt16"), 62);
    assert_eq!(code("ALTER TABLE t UPDATE a = 1"), 62, "UPDATE needs WHERE");
}

#[test]
fn lightweight_delete_optimize_system_kill_check() {
    assert_eq!(
        parse_statement("DELETE FROM t WHERE a = 1 SETTINGS lightweight_deletes_sync = 1").unwrap(),
        Statement::Delete {
            table: (None, "t".into()),
            predicate: "a = 1".into(),
            settings: vec![("lightweight_deletes_sync".into(), "1".into())]
        }
    );
    assert_eq!(
        parse_statement("OPTIMIZE TABLE t PARTITION 202306 FINAL DEDUPLICATE").unwrap(),
        Statement::Optimize {
            table: (None, "t".into()),
            partition: Some(PartitionSpec::Value("202306".into())),
            final_: true,
            deduplicate: true,
            cleanup: false
        }
    );
    assert!(matches!(
        parse_statement("OPTIMIZE TABLE t FINAL CLEANUP").unwrap(),
        Statement::Optimize { cleanup: true, .. }
    ));
    assert_eq!(code("OPTIMIZE TABLE t CLEANUP"), 36);
    assert_eq!(
        parse_statement("SYSTEM STOP MERGES db.t").unwrap(),
        Statement::SystemMerges { start: false, table: Some((Some("db".into()), "t".into())) }
    );
    assert_eq!(parse_statement("system start merges").unwrap(), Statement::SystemMerges { start: true, table: None });
    assert_eq!(
        parse_statement("KILL MUTATION WHERE mutation_id = 'mutation_5.txt' SYNC").unwrap(),
        Statement::KillMutation { predicate: "mutation_id = 'mutation_5.txt'".into() }
    );
    assert_eq!(
        parse_statement("CHECK TABLE t").unwrap(),
        Statement::CheckTable { table: (None, "t".into()), partition: None }
    );
}

#[test]
fn databases_drop_truncate_rename_and_pass_through() {
    assert_eq!(
        parse_statement("CREATE DATABASE IF NOT EXISTS d ENGINE = Atomic").unwrap(),
        Statement::CreateDatabase { name: "d".into(), if_not_exists: true }
    );
    assert_eq!(
        parse_statement("DROP DATABASE d SYNC").unwrap(),
        Statement::DropDatabase { name: "d".into(), if_exists: false }
    );
    assert_eq!(
        parse_statement("DROP TABLE IF EXISTS d.t").unwrap(),
        Statement::DropTable { table: (Some("d".into()), "t".into()), if_exists: true }
    );
    assert_eq!(
        parse_statement("TRUNCATE TABLE t").unwrap(),
        Statement::TruncateTable { table: (None, "t".into()), if_exists: false }
    );
    assert_eq!(
        parse_statement("RENAME TABLE a TO b, d.c TO d.e").unwrap(),
        Statement::RenameTable {
            pairs: vec![
                ((None, "a".into()), (None, "b".into())),
                ((Some("d".into()), "c".into()), (Some("d".into()), "e".into()))
            ]
        }
    );
    for sql in ["SELECT count() FROM t FINAL", "INSERT INTO t FORMAT TSV", "SHOW TABLES", "DESCRIBE TABLE t"] {
        assert_eq!(parse_statement(sql).unwrap(), Statement::Other(sql.into()));
    }
    assert_eq!(code(""), 62);
    assert_eq!(code("   ;  "), 62);
}

/// Regression (found by the kill -9 crash test): an insert spanning several
/// partitions, cut off after some of its parts were written, left those
/// parts to reappear on restart. Now it is all its parts or none.
#[test]
fn regression_multi_partition_insert_cut_off_leaves_no_parts() {
    use std::sync::Arc;

    use arrow::array::{Date32Array, RecordBatch, UInt32Array};
    use storage::local::{BlockDedup, LocalTable};

    let dir = tempfile::tempdir().unwrap();
    let ddl = "CREATE TABLE t (d Date, k UInt32) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY k";
    let open = || {
        let def = storage::Table::new(create(ddl).table_def().unwrap()).unwrap();
        LocalTable::open(dir.path(), "default.t", def, &|_: &str| Ok(vec![])).unwrap()
    };
    let t = open();
    let batch = RecordBatch::try_new(
        t.storage().schema().clone(),
        vec![Arc::new(Date32Array::from(vec![19723, 19760, 19800])), Arc::new(UInt32Array::from(vec![1, 2, 3]))],
    )
    .unwrap();
    let dedup = BlockDedup { deduplicate: true, ..Default::default() };
    storage::failpoint::arm("part_write:after_rename");
    assert!(t.insert(&batch, &dedup).is_err());
    storage::failpoint::disarm_all();
    assert!(t.snapshot().is_empty(), "a part of the cut-off insert is visible");
    drop(t);
    let t = open();
    assert!(t.snapshot().is_empty(), "a part of the cut-off insert came back after restart");
    assert_eq!(t.insert(&batch, &dedup).unwrap(), 3);
    assert_eq!(t.snapshot().len(), 3);
}
