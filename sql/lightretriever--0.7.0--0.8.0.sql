-- lightretriever 0.7.0 → 0.8.0 (ALTER EXTENSION lightretriever UPDATE): the ALTER event
-- trigger follows the auto-encoded tables that a command changes without naming them, the
-- inheritance children and partitions of an altered table and the typed tables of a composite
-- type changed by ALTER TYPE … CASCADE: a renamed column is followed, a dropped or retyped text,
-- vector or key column is refused, as for the table itself (before, a renamed column left the
-- table's triggers with the old name, so that its writes failed, and a dropped one, with CASCADE,
-- left rows that were never encoded). lr_auto_encoding_follow is no longer
-- executable by PUBLIC (the event triggers call it). A column of an auto-encoded table dropped
-- with another object (DROP TYPE, DOMAIN or COLLATION … CASCADE) is checked as ALTER TABLE …
-- DROP COLUMN is. Nothing else changes: catalog tables, queues, vectors and triggers are kept.
-- tests/e2e/tests/upgrade.rs checks that the result equals a fresh 0.8.0 install object for object.
\echo Use "ALTER EXTENSION lightretriever UPDATE TO '0.8.0'" to load this file. \quit

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
    FOR e IN
        SELECT DISTINCT a.source::pg_catalog.oid AS source FROM lightretriever.lr_auto_encodings a
          JOIN pg_catalog.pg_event_trigger_dropped_objects() d ON d.objid OPERATOR(pg_catalog.=) a.source::pg_catalog.oid
         WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid OPERATOR(pg_catalog.<>) 0
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(e.source);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION lr_auto_encoding_on_alter() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH RECURSIVE changed(relid) AS (
            SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
             WHERE c.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
            UNION
            SELECT n.relid FROM changed ch CROSS JOIN LATERAL (
                SELECT i.inhrelid AS relid FROM pg_catalog.pg_inherits i WHERE i.inhparent OPERATOR(pg_catalog.=) ch.relid
                UNION ALL
                SELECT t.oid FROM pg_catalog.pg_class ct JOIN pg_catalog.pg_class t ON t.reloftype OPERATOR(pg_catalog.=) ct.reltype
                 WHERE ct.oid OPERATOR(pg_catalog.=) ch.relid AND ct.relkind OPERATOR(pg_catalog.=) 'c') n
        )
        SELECT DISTINCT a.source::pg_catalog.oid AS source FROM changed
          JOIN lightretriever.lr_auto_encodings a ON a.source::pg_catalog.oid OPERATOR(pg_catalog.=) changed.relid
    LOOP
        PERFORM lightretriever.lr_auto_encoding_follow(r.source);
    END LOOP;
END $$;
-- Called by the event triggers (SECURITY DEFINER); nobody else needs it.
REVOKE ALL ON FUNCTION lr_auto_encoding_follow(pg_catalog.oid) FROM PUBLIC;

DROP EVENT TRIGGER lr_auto_encoding_alter;
-- ALTER VIEW, ALTER MATERIALIZED VIEW and ALTER FOREIGN TABLE accept RENAME COLUMN of a table too;
-- ALTER TYPE … CASCADE changes the columns of a composite type's typed tables.
CREATE EVENT TRIGGER lr_auto_encoding_alter ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION lr_auto_encoding_on_alter();
