-- Auto-encoding: tables whose vectors the background worker keeps fresh
-- (lr_enable_auto_encoding). Written only by the extension's SECURITY DEFINER functions and
-- the worker; everyone may read them.

CREATE TABLE lr_auto_encodings (
    id            serial PRIMARY KEY,
    source        regclass NOT NULL UNIQUE,
    text_column   name NOT NULL,
    key_columns   name[] NOT NULL,          -- the source's primary key
    key_types     text[] NOT NULL,          -- format_type() of each key column
    model         text NOT NULL REFERENCES lr_models(name),
    sparse_model  text REFERENCES lr_models(name),
    vector_column name NOT NULL,
    sparse_column name,
    batch_size    integer NOT NULL CHECK (batch_size BETWEEN 1 AND 1024),
    queue_table   name NOT NULL,            -- in schema lightretriever
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    name NOT NULL DEFAULT session_user
);
COMMENT ON TABLE lr_auto_encodings IS 'Tables kept encoded by the lightretriever worker (lr_enable_auto_encoding)';

-- Rows that failed lightretriever.max_retries times, with the last error. Re-enqueue with
-- lr_retry_failed(source).
CREATE TABLE lr_failed_items (
    encoding_id integer NOT NULL REFERENCES lr_auto_encodings(id) ON DELETE CASCADE,
    row_key     jsonb NOT NULL,             -- the source row's primary key
    error       text NOT NULL,
    attempts    integer NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON lr_failed_items (encoding_id, row_key);

-- Every failed model run or database error of the worker.
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

GRANT SELECT ON lr_auto_encodings, lr_failed_items, lr_encoding_errors, lr_encoding_batches TO PUBLIC;

-- Per source table: queue depth, rows in flight (the batch a worker is encoding now, as it
-- reports in pg_stat_activity), failed, rows with a vector, recent rate, last error.
CREATE FUNCTION lr_encoding_status_rows(
    OUT source regclass, OUT model text, OUT sparse_model text, OUT status text,
    OUT pending bigint, OUT in_flight bigint, OUT failed bigint, OUT done bigint,
    OUT rows_per_second double precision, OUT last_error text, OUT last_error_at timestamptz,
    OUT worker_pid integer)
RETURNS SETOF record LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e lightretriever.lr_auto_encodings;
    queued bigint;
BEGIN
    FOR e IN SELECT * FROM lightretriever.lr_auto_encodings ORDER BY id LOOP
        source := e.source; model := e.model; sparse_model := e.sparse_model; status := e.status;
        EXECUTE format('SELECT count(*) FROM lightretriever.%I', e.queue_table) INTO queued;
        SELECT coalesce(sum(substring(a.query FROM 'encoding (\d+) rows')::bigint), 0), max(a.pid)
          INTO in_flight, worker_pid
          FROM pg_stat_activity a
         WHERE a.backend_type = 'lightretriever encoder'
           AND a.query LIKE format('lightretriever: encoding %% rows of auto-encoding %s', e.id);
        pending := greatest(queued - in_flight, 0);
        SELECT count(*) INTO failed FROM lightretriever.lr_failed_items f WHERE f.encoding_id = e.id;
        EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NOT NULL', e.source, e.vector_column) INTO done;
        SELECT coalesce(sum(b.rows), 0) / 60.0 INTO rows_per_second
          FROM lightretriever.lr_encoding_batches b
         WHERE b.encoding_id = e.id AND b.at > now() - interval '1 minute';
        SELECT r.error, r.at INTO last_error, last_error_at
          FROM lightretriever.lr_encoding_errors r WHERE r.encoding_id = e.id ORDER BY r.id DESC LIMIT 1;
        IF worker_pid IS NULL THEN
            SELECT b.worker_pid INTO worker_pid FROM lightretriever.lr_encoding_batches b
             WHERE b.encoding_id = e.id ORDER BY b.at DESC LIMIT 1;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE VIEW lr_encoding_status AS SELECT * FROM lr_encoding_status_rows();
GRANT SELECT ON lr_encoding_status TO PUBLIC;

-- Dropping an auto-encoded table drops its queue and trigger functions with it.
CREATE FUNCTION lr_auto_encoding_on_drop() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
BEGIN
    FOR e IN
        SELECT a.* FROM lightretriever.lr_auto_encodings a
          JOIN pg_event_trigger_dropped_objects() d ON d.objid = a.source::oid
         WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
    LOOP
        PERFORM lightretriever.lr_drop_auto_encoding_objects(e.id);
    END LOOP;
END $$;

-- The objects lr_enable_auto_encoding made for encoding `id` (not the columns it added).
CREATE FUNCTION lr_drop_auto_encoding_objects(id integer) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q name;
BEGIN
    SELECT queue_table INTO q FROM lightretriever.lr_auto_encodings a WHERE a.id = lr_drop_auto_encoding_objects.id;
    DELETE FROM lightretriever.lr_auto_encodings a WHERE a.id = lr_drop_auto_encoding_objects.id;
    IF q IS NOT NULL THEN
        EXECUTE format('DROP TABLE IF EXISTS lightretriever.%I', q);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' || id || '_clear');
    EXECUTE format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' || id || '_enqueue');
    EXECUTE format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' || id || '_forget');
    EXECUTE format('DROP FUNCTION IF EXISTS lightretriever.%I() CASCADE', 'lr_auto_encoding_' || id || '_truncate');
END $$;
REVOKE ALL ON FUNCTION lr_drop_auto_encoding_objects(integer) FROM PUBLIC;

CREATE EVENT TRIGGER lr_auto_encoding_drop ON sql_drop
    EXECUTE FUNCTION lr_auto_encoding_on_drop();

-- Waits until the queue of `source` is empty (true) or `timeout` passes (false).
CREATE FUNCTION lr_wait_for_encoding(source regclass, timeout interval DEFAULT '5 minutes')
RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q name;
    deadline timestamptz := clock_timestamp() + timeout;
    left_over boolean;
BEGIN
    SELECT queue_table INTO q FROM lightretriever.lr_auto_encodings a WHERE a.source = lr_wait_for_encoding.source;
    IF q IS NULL THEN
        RAISE EXCEPTION 'lightretriever: % is not auto-encoded', source
            USING ERRCODE = 'undefined_object', HINT = 'Enable it with lightretriever.lr_enable_auto_encoding.';
    END IF;
    LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM lightretriever.%I)', q) INTO left_over;
        IF NOT left_over THEN
            RETURN true;
        END IF;
        IF clock_timestamp() >= deadline THEN
            RETURN false;
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
