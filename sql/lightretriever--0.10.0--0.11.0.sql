-- lightretriever 0.10.0 → 0.11.0 (ALTER EXTENSION lightretriever UPDATE).
-- The queues move to a schema of their own that no other role may use. In the extension's
-- schema, which every role may use, any role could create a view on a queue or a column of a
-- queue's row type; 0.10.0 drops such objects with the queue, but their role could still make
-- the owner's drop wait by holding a lock on them, and a queue-typed primary key of the role's
-- own auto-encoded table made a superuser's drop of the queue's table fail.

-- No table is enabled or disabled while the queues move (an enable that has written its row
-- is waited for, and its queue moved with the others).
LOCK TABLE lr_auto_encodings IN SHARE ROW EXCLUSIVE MODE;

-- Writes to the auto-encoded tables (their partitions too) wait for the update, in the order
-- writers lock, table then queue: a write that reached a moved queue first would fail, its
-- trigger function naming the queue where it was. Reads go on; the workers skip a locked table.
DO $$
DECLARE
    source pg_catalog.regclass;
BEGIN
    FOR source IN SELECT a.source FROM lightretriever.lr_auto_encodings a ORDER BY a.id LOOP
        EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE MODE', source);
    END LOOP;
END $$;

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

-- Each queue (its sequence and index go with it). Objects another role made on a queue before
-- this update stay; they go with the queue, as in 0.10.0.
DO $$
DECLARE
    q name;
BEGIN
    FOR q IN SELECT a.queue_table FROM lightretriever.lr_auto_encodings a ORDER BY a.id LOOP
        IF pg_catalog.to_regclass(pg_catalog.format('lightretriever.%I', q)) IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER TABLE lightretriever.%I SET SCHEMA lightretriever_queues', q);
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION lr_drop_auto_encoding_objects(id integer) RETURNS void LANGUAGE plpgsql SECURITY DEFINER
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

CREATE OR REPLACE FUNCTION lr_auto_encoding_on_drop() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
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

-- The generated trigger functions name the queue: made again by this library, which names
-- the new schema now that it is the extension's (the triggers stay as they are).
CREATE  FUNCTION "lr_regenerate_auto_encoding_trigger_functions"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lr_regenerate_auto_encoding_trigger_functions_wrapper';
SELECT lightretriever.lr_regenerate_auto_encoding_trigger_functions();
