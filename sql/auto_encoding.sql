-- Auto-encoding: tables whose vectors the background worker keeps fresh
-- (lr_enable_auto_encoding). Written only by the extension's SECURITY DEFINER functions and
-- the worker. Each table's queue (lightretriever_queues.lr_queue_<id>, created by
-- lr_enable_auto_encoding) holds its pending and failed keys as text; only superusers read
-- queues directly, everyone else through the views below, which show a role only the tables it
-- owns or may read.

-- The queues' schema. No other role may use it (a new schema grants nothing to PUBLIC): in a
-- schema it can use, a role could create a view on a queue, or a column of a queue's row
-- type, and so make the table owner's drop wait on its locks.
CREATE SCHEMA lightretriever_queues;
COMMENT ON SCHEMA lightretriever_queues IS 'The auto-encoding queues of lightretriever (superusers only)';
-- Nor what default privileges (ALTER DEFAULT PRIVILEGES … ON SCHEMAS) granted it.
DO $$
DECLARE
    grantee oid;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
                    WHERE n.nspname OPERATOR(pg_catalog.=) 'lightretriever_queues' AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA lightretriever_queues FROM %s',
            CASE WHEN grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(grantee)) END);
    END LOOP;
    -- The extension's owner, as the queues' own: an update may run as another superuser.
    EXECUTE pg_catalog.format('ALTER SCHEMA lightretriever_queues OWNER TO %s',
        (SELECT e.extowner::pg_catalog.regrole FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'lightretriever'));
END $$;

CREATE TABLE lr_auto_encodings (
    id            serial PRIMARY KEY,
    source        regclass NOT NULL UNIQUE,
    text_column   name NOT NULL,            -- names follow renames (event trigger)
    key_columns   name[] NOT NULL,          -- the source's primary key
    text_attnum   smallint NOT NULL,        -- the columns' identities: what renames keep
    key_attnums   smallint[] NOT NULL,
    vector_attnum smallint NOT NULL,
    sparse_attnum smallint,
    model         text NOT NULL REFERENCES lr_models(name),
    sparse_model  text REFERENCES lr_models(name),
    vector_column name NOT NULL,
    sparse_column name,
    batch_size    integer NOT NULL CHECK (batch_size BETWEEN 1 AND 1024),
    queue_table   name NOT NULL,            -- in schema lightretriever_queues
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE lr_auto_encodings IS 'Tables kept encoded by the lightretriever worker (lr_enable_auto_encoding)';

-- Every failed model run or database error of the worker. Its messages can quote the tables'
-- data: a role sees the rows of the tables it owns or may read (row-level security).
CREATE TABLE lr_encoding_errors (
    id          bigserial PRIMARY KEY,
    encoding_id integer REFERENCES lr_auto_encodings(id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    worker_pid  integer NOT NULL,
    rows        integer NOT NULL,
    error       text NOT NULL
);
CREATE INDEX ON lr_encoding_errors (encoding_id, at);

-- One row per committed batch, kept for ten minutes (rates in lr_encoding_status).
CREATE TABLE lr_encoding_batches (
    encoding_id integer NOT NULL REFERENCES lr_auto_encodings(id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    rows        integer NOT NULL,
    seconds     real NOT NULL,
    worker_pid  integer NOT NULL
);
CREATE INDEX ON lr_encoding_batches (encoding_id, at);

-- Row-level security: a role sees the auto-encodings (and batch rates) of the tables it owns or
-- may read, and the error messages of the tables it owns.
GRANT SELECT ON lr_auto_encodings, lr_encoding_errors, lr_encoding_batches TO PUBLIC;
ALTER TABLE lr_auto_encodings ENABLE ROW LEVEL SECURITY;
CREATE POLICY lr_auto_encodings_visible ON lr_auto_encodings FOR SELECT
    USING (lightretriever.lr_may_read(source::pg_catalog.oid));
ALTER TABLE lr_encoding_batches ENABLE ROW LEVEL SECURITY;
CREATE POLICY lr_encoding_batches_visible ON lr_encoding_batches FOR SELECT
    USING (lightretriever.lr_may_read((SELECT a.source::pg_catalog.oid FROM lightretriever.lr_auto_encodings a
                                        WHERE a.id OPERATOR(pg_catalog.=) encoding_id)));
ALTER TABLE lr_encoding_errors ENABLE ROW LEVEL SECURITY;
CREATE POLICY lr_encoding_errors_visible ON lr_encoding_errors FOR SELECT
    USING (lightretriever.lr_may_see((SELECT a.source::pg_catalog.oid FROM lightretriever.lr_auto_encodings a
                                       WHERE a.id OPERATOR(pg_catalog.=) encoding_id)));

-- Per source table the caller owns or may read: queue depth, rows in flight, failed, rows with a vector,
-- recent rate, time left for the backlog, last error (lr_encoding_status_rows).
CREATE VIEW lr_encoding_status AS
    SELECT source::pg_catalog.regclass AS source, model, sparse_model, status, pending, in_flight, failed, done,
           rows_per_second, last_error, last_error_at, worker_pid,
           -- The backlog at the recent rate: 0 when there is none, NULL while nothing is being
           -- encoded (paused, broken, or no batch in the last minute).
           CASE WHEN (pending OPERATOR(pg_catalog.+) in_flight) OPERATOR(pg_catalog.=) 0 THEN '0'::pg_catalog.interval
                WHEN status OPERATOR(pg_catalog.=) 'active' AND rows_per_second OPERATOR(pg_catalog.>) 0
                THEN pg_catalog.make_interval(secs => pg_catalog.ceil((pending OPERATOR(pg_catalog.+) in_flight)::pg_catalog.float8
                                                                      OPERATOR(pg_catalog./) rows_per_second))
           END AS eta
      FROM lightretriever.lr_encoding_status_rows();
GRANT SELECT ON lr_encoding_status TO PUBLIC;

-- Rows that failed lightretriever.max_retries times, with the last error, of the tables the
-- caller owns. Re-enqueue with lr_retry_failed(source).
CREATE VIEW lr_failed_items AS
    SELECT encoding_id, source::pg_catalog.regclass AS source, row_key, error, attempts, failed_at
      FROM lightretriever.lr_failed_items_rows();
GRANT SELECT ON lr_failed_items TO PUBLIC;

-- Dropping an auto-encoded table drops its queue and trigger functions with it. Its text, vector
-- or key column (or its primary key) dropped with another object (DROP TYPE, DOMAIN, COLLATION,
-- OPERATOR CLASS … CASCADE, DROP OWNED … CASCADE) is refused for a role with the table owner's
-- rights; another role's command is not, and the table loses its auto-encoding, with a WARNING
-- (lr_auto_encoding_follow). The ALTER commands are left to lr_auto_encoding_on_alter.
CREATE FUNCTION lr_auto_encoding_on_drop() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT a.id FROM lightretriever.lr_auto_encodings a
          JOIN pg_catalog.pg_event_trigger_dropped_objects() d ON d.objid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid OPERATOR(pg_catalog.=) 0
    LOOP
        PERFORM lightretriever.lr_drop_auto_encoding_objects(e.id);
    END LOOP;
    IF TG_TAG OPERATOR(pg_catalog.~~) 'ALTER %' THEN
        RETURN;
    END IF;
    FOR e IN
        SELECT a.source::pg_catalog.oid AS source FROM lightretriever.lr_auto_encodings a
         WHERE EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
                        WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND d.objid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid AND d.objsubid OPERATOR(pg_catalog.<>) 0)
            -- A primary key can go without a column (DROP OPERATOR CLASS … CASCADE); not the
            -- extension's own (a queue's, when an auto-encoding is dropped).
            OR (EXISTS (SELECT FROM pg_catalog.pg_event_trigger_dropped_objects() d
                         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass
                           AND d.schema_name OPERATOR(pg_catalog.<>) 'lightretriever_queues')
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint k
                                 WHERE k.conrelid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid AND k.contype OPERATOR(pg_catalog.=) 'p'))
         ORDER BY a.id
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(e.source, reached => true);
    END LOOP;
END $$;

-- The objects lr_enable_auto_encoding made for encoding `id` (not the columns it added). The
-- queue goes with whatever depends on it: before 0.11.0 moved the queues to a schema no other
-- role may use, a role could create a view on a queue without any right on it, and such a view
-- (left from then) must not keep the table's owner from dropping the table (or its
-- auto-encoding).
CREATE FUNCTION lr_drop_auto_encoding_objects(id integer) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q name;
BEGIN
    SELECT queue_table INTO q FROM lightretriever.lr_auto_encodings a WHERE a.id OPERATOR(pg_catalog.=) lr_drop_auto_encoding_objects.id;
    DELETE FROM lightretriever.lr_auto_encodings a WHERE a.id OPERATOR(pg_catalog.=) lr_drop_auto_encoding_objects.id;
    IF q IS NOT NULL THEN
        EXECUTE pg_catalog.format('DROP TABLE IF EXISTS lightretriever_queues.%I CASCADE', q);
    END IF;
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_clear');
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_enqueue');
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_forget');
    EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' OPERATOR(pg_catalog.||) id OPERATOR(pg_catalog.||) '_truncate');
END $$;
REVOKE ALL ON FUNCTION lr_drop_auto_encoding_objects(integer) FROM PUBLIC;

CREATE EVENT TRIGGER lr_auto_encoding_drop ON sql_drop
    EXECUTE FUNCTION lr_auto_encoding_on_drop();

-- ALTER TABLE of an auto-encoded table: renamed columns are followed, a dropped or retyped
-- text or vector column or a dropped primary key is refused (lr_auto_encoding_follow). The
-- tables a command changes without naming them are followed too: the inheritance children and
-- partitions of an altered table (at any depth), and the typed tables of a composite type that
-- ALTER TYPE … CASCADE changes (then their children). Such a table is refused as if named,
-- unless the role running the command lacks its owner's rights (a partitioned table's owner
-- drops the primary key of every partition): it then loses its auto-encoding, with a WARNING.
CREATE FUNCTION lr_auto_encoding_on_alter() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH RECURSIVE changed(relid, named) AS (
            SELECT c.objid, true FROM pg_catalog.pg_event_trigger_ddl_commands() c
             WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            UNION
            SELECT n.relid, false FROM changed ch CROSS JOIN LATERAL (
                SELECT i.inhrelid AS relid FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) ch.relid
                UNION ALL
                SELECT t.oid FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_class t ON t.reloftype OPERATOR(pg_catalog.=) ct.reltype
                 WHERE ct.oid OPERATOR(pg_catalog.=) ch.relid AND ct.relkind OPERATOR(pg_catalog.=) 'c') n
        )
        SELECT a.source::pg_catalog.oid AS source, pg_catalog.bool_or(changed.named) AS named FROM changed
          JOIN lightretriever.lr_auto_encodings a ON a.source::pg_catalog.oid OPERATOR(pg_catalog.=) changed.relid
         GROUP BY a.id, a.source
         -- The named tables first: one that refuses ends the command before any other table's
         -- auto-encoding is dropped (whose nested DROP would run lr_auto_encoding_on_drop).
         ORDER BY pg_catalog.bool_or(changed.named) DESC, a.id
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(r.source, reached => NOT r.named);
    END LOOP;
END $$;
-- Called by the event triggers (SECURITY DEFINER); nobody else needs it.
REVOKE ALL ON FUNCTION lr_auto_encoding_follow(pg_catalog.oid, boolean) FROM PUBLIC;

-- ALTER VIEW, ALTER MATERIALIZED VIEW and ALTER FOREIGN TABLE accept RENAME COLUMN of a table too;
-- ALTER TYPE … CASCADE changes the columns of a composite type's typed tables.
CREATE EVENT TRIGGER lr_auto_encoding_alter ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION lr_auto_encoding_on_alter();
