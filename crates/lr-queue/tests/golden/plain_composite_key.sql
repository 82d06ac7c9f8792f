-- create_queue
CREATE TABLE "lightretriever_queues"."lr_queue_7" (
    id bigserial PRIMARY KEY,
    key pg_catalog.text[] COLLATE pg_catalog."C" NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    retry_at timestamptz NOT NULL DEFAULT '-infinity',
    last_error pg_catalog.text,
    failed_at timestamptz,
    enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp());

-- create_queue
CREATE INDEX ON "lightretriever_queues"."lr_queue_7" (key);

-- create_queue
REVOKE ALL ON "lightretriever_queues"."lr_queue_7" FROM PUBLIC;

-- trigger_functions
CREATE OR REPLACE FUNCTION lightretriever."lr_auto_encoding_7_clear"() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $lr$
BEGIN
  IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' OR ((NEW."Body Text" IS NULL) OPERATOR(pg_catalog.<>) (OLD."Body Text" IS NULL) OR pg_catalog.format('%s', NEW."Body Text") COLLATE pg_catalog."C" OPERATOR(pg_catalog.<>) pg_catalog.format('%s', OLD."Body Text")) THEN NEW."Body Text_embedding" := NULL; END IF;
  RETURN NEW;
END $lr$;

-- trigger_functions
CREATE OR REPLACE FUNCTION lightretriever."lr_auto_encoding_7_enqueue"() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = '3' SET bytea_output = 'hex' SET lc_monetary = 'C' AS $lr$
BEGIN
  IF NEW."Body Text" IS NOT NULL AND (TG_OP OPERATOR(pg_catalog.=) 'INSERT' OR ((NEW."Body Text" IS NULL) OPERATOR(pg_catalog.<>) (OLD."Body Text" IS NULL) OR pg_catalog.format('%s', NEW."Body Text") COLLATE pg_catalog."C" OPERATOR(pg_catalog.<>) pg_catalog.format('%s', OLD."Body Text")) OR ((ARRAY[pg_catalog.format('%s', NEW."Key"), pg_catalog.format('%s', NEW."Second ""Key""")] COLLATE pg_catalog."C" OPERATOR(pg_catalog.<>) ARRAY[pg_catalog.format('%s', OLD."Key"), pg_catalog.format('%s', OLD."Second ""Key""")]) AND NEW."Body Text_embedding" IS NULL) OR (NEW."Body Text_embedding" IS NULL AND OLD."Body Text_embedding" IS NOT NULL)) THEN
    INSERT INTO "lightretriever_queues"."lr_queue_7" (key) VALUES (ARRAY[pg_catalog.format('%s', NEW."Key"), pg_catalog.format('%s', NEW."Second ""Key""")]);
  END IF;
  RETURN NULL;
END $lr$;

-- trigger_functions
CREATE OR REPLACE FUNCTION lightretriever."lr_auto_encoding_7_forget"() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = '3' SET bytea_output = 'hex' SET lc_monetary = 'C' AS $lr$
BEGIN
  DELETE FROM "lightretriever_queues"."lr_queue_7" WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY(
    SELECT q.id FROM "lightretriever_queues"."lr_queue_7" q WHERE q.key OPERATOR(pg_catalog.=) ARRAY[pg_catalog.format('%s', OLD."Key"), pg_catalog.format('%s', OLD."Second ""Key""")] FOR UPDATE SKIP LOCKED));
  RETURN NULL;
END $lr$;

-- trigger_functions
CREATE OR REPLACE FUNCTION lightretriever."lr_auto_encoding_7_truncate"() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET datestyle = 'ISO, YMD' SET intervalstyle = 'postgres' SET extra_float_digits = '3' SET bytea_output = 'hex' SET lc_monetary = 'C' AS $lr$
BEGIN
  DELETE FROM "lightretriever_queues"."lr_queue_7" WHERE id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT q.id FROM "lightretriever_queues"."lr_queue_7" q FOR UPDATE SKIP LOCKED));
  RETURN NULL;
END $lr$;

-- trigger_functions
REVOKE ALL ON FUNCTION lightretriever."lr_auto_encoding_7_clear"() FROM PUBLIC;

-- trigger_functions
REVOKE ALL ON FUNCTION lightretriever."lr_auto_encoding_7_enqueue"() FROM PUBLIC;

-- trigger_functions
REVOKE ALL ON FUNCTION lightretriever."lr_auto_encoding_7_forget"() FROM PUBLIC;

-- trigger_functions
REVOKE ALL ON FUNCTION lightretriever."lr_auto_encoding_7_truncate"() FROM PUBLIC;

-- create_triggers
CREATE TRIGGER lr_auto_encoding_clear BEFORE INSERT OR UPDATE OF "Body Text" ON "Odd Schema"."My ""Table""" FOR EACH ROW EXECUTE FUNCTION lightretriever."lr_auto_encoding_7_clear"();

-- create_triggers
CREATE TRIGGER lr_auto_encoding_enqueue AFTER INSERT OR UPDATE OF "Body Text", "Key", "Second ""Key""", "Body Text_embedding" ON "Odd Schema"."My ""Table""" FOR EACH ROW EXECUTE FUNCTION lightretriever."lr_auto_encoding_7_enqueue"();

-- create_triggers
CREATE TRIGGER lr_auto_encoding_forget AFTER DELETE ON "Odd Schema"."My ""Table""" FOR EACH ROW EXECUTE FUNCTION lightretriever."lr_auto_encoding_7_forget"();

-- create_triggers
CREATE TRIGGER lr_auto_encoding_truncate AFTER TRUNCATE ON "Odd Schema"."My ""Table""" FOR EACH STATEMENT EXECUTE FUNCTION lightretriever."lr_auto_encoding_7_truncate"();

-- drop_triggers
DROP TRIGGER IF EXISTS lr_auto_encoding_clear ON "Odd Schema"."My ""Table""";

-- drop_triggers
DROP TRIGGER IF EXISTS lr_auto_encoding_enqueue ON "Odd Schema"."My ""Table""";

-- drop_triggers
DROP TRIGGER IF EXISTS lr_auto_encoding_forget ON "Odd Schema"."My ""Table""";

-- drop_triggers
DROP TRIGGER IF EXISTS lr_auto_encoding_truncate ON "Odd Schema"."My ""Table""";

-- backfill_keys
SELECT ARRAY[pg_catalog.format('%s', s."Key"), pg_catalog.format('%s', s."Second ""Key""")] FROM ONLY "Odd Schema"."My ""Table""" s WHERE s."Body Text" IS NOT NULL ORDER BY s."Key", s."Second ""Key""";

-- missing_keys
SELECT ARRAY[pg_catalog.format('%s', s."Key"), pg_catalog.format('%s', s."Second ""Key""")] FROM ONLY "Odd Schema"."My ""Table""" s WHERE s."Body Text" IS NOT NULL AND s."Body Text_embedding" IS NULL ORDER BY s."Key", s."Second ""Key""";

-- enqueue_keys
INSERT INTO "lightretriever_queues"."lr_queue_7" (key) SELECT ARRAY[k.k1, k.k2] FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS k(k1, k2);

-- claim
SELECT pg_catalog.array_agg(c.id ORDER BY c.id), c.key
  FROM (SELECT q.id, q.key FROM "lightretriever_queues"."lr_queue_7" q
         WHERE q.failed_at IS NULL AND q.retry_at OPERATOR(pg_catalog.<=) pg_catalog.now()
         ORDER BY q.id LIMIT $1 FOR UPDATE SKIP LOCKED) c
 GROUP BY c.key ORDER BY pg_catalog.min(c.id);

-- read_texts
SELECT k.n, s.ctid IS NOT NULL, s."Body Text"::pg_catalog.text FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS k(k1, k2, n) LEFT JOIN ONLY "Odd Schema"."My ""Table""" s ON s."Key" OPERATOR(pg_catalog.=) k.k1::integer AND s."Second ""Key""" OPERATOR(pg_catalog.=) k.k2::"Odd Schema"."my type" ORDER BY k.n;

-- lock_rows
SELECT k.n, s.ctid::pg_catalog.text, s.tableoid, s."Body Text"::pg_catalog.text FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS k(k1, k2, n) JOIN ONLY "Odd Schema"."My ""Table""" s ON s."Key" OPERATOR(pg_catalog.=) k.k1::integer AND s."Second ""Key""" OPERATOR(pg_catalog.=) k.k2::"Odd Schema"."my type" FOR NO KEY UPDATE OF s SKIP LOCKED;

-- write_vectors
UPDATE ONLY "Odd Schema"."My ""Table""" SET "Body Text_embedding" = $1 WHERE ctid OPERATOR(pg_catalog.=) $3::pg_catalog.tid AND tableoid OPERATOR(pg_catalog.=) $4::pg_catalog.oid;

-- count_vectors
SELECT pg_catalog.count(*) FROM ONLY "Odd Schema"."My ""Table""" WHERE "Body Text_embedding" IS NOT NULL;

-- count_attempt
UPDATE "lightretriever_queues"."lr_queue_7" SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $2,
       retry_at = pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => LEAST(60, 2 OPERATOR(pg_catalog.^) attempts))
 WHERE id OPERATOR(pg_catalog.=) ANY ($1);

-- mark_failed
UPDATE "lightretriever_queues"."lr_queue_7" SET failed_at = pg_catalog.now() WHERE id OPERATOR(pg_catalog.=) ANY ($1) AND attempts OPERATOR(pg_catalog.>=) $2;

-- finish
DELETE FROM "lightretriever_queues"."lr_queue_7" WHERE id OPERATOR(pg_catalog.=) ANY ($1);

-- retry_soon
UPDATE "lightretriever_queues"."lr_queue_7" SET retry_at = pg_catalog.now() OPERATOR(pg_catalog.+) '1 second'::pg_catalog.interval WHERE id OPERATOR(pg_catalog.=) ANY ($1);

-- retry_failed
WITH r AS (UPDATE "lightretriever_queues"."lr_queue_7" SET failed_at = NULL, attempts = 0, retry_at = '-infinity' WHERE failed_at IS NOT NULL RETURNING key)
SELECT pg_catalog.count(DISTINCT key) FROM r;

-- queue_counts
SELECT pg_catalog.count(*) FILTER (WHERE failed_at IS NULL), pg_catalog.count(DISTINCT key) FILTER (WHERE failed_at IS NOT NULL) FROM "lightretriever_queues"."lr_queue_7";

-- pending_exists
SELECT EXISTS (SELECT 1 FROM "lightretriever_queues"."lr_queue_7" WHERE failed_at IS NULL);

-- failed_rows
SELECT DISTINCT ON (key) key, last_error, attempts, failed_at FROM "lightretriever_queues"."lr_queue_7" WHERE failed_at IS NOT NULL ORDER BY key, id DESC;

-- create_pending_index
CREATE INDEX "lr_auto_encoding_7_pending" ON "Odd Schema"."My ""Table""" ("Key", "Second ""Key""") WHERE "Body Text" IS NOT NULL AND "Body Text_embedding" IS NULL;

-- pending_rows
SELECT ARRAY[pg_catalog.format('%s', s."Key"), pg_catalog.format('%s', s."Second ""Key""")], s."Body Text"::pg_catalog.text FROM "Odd Schema"."My ""Table""" s WHERE s."Body Text" IS NOT NULL AND s."Body Text_embedding" IS NULL
                AND NOT (ARRAY[pg_catalog.format('%s', s."Key"), pg_catalog.format('%s', s."Second ""Key""")]::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]))
              ORDER BY s."Key", s."Second ""Key""" LIMIT $1;

-- pending_count
SELECT pg_catalog.count(*) FROM "Odd Schema"."My ""Table""" s WHERE s."Body Text" IS NOT NULL AND s."Body Text_embedding" IS NULL;

-- write_vectors_by_key
UPDATE "Odd Schema"."My ""Table""" s SET "Body Text_embedding" = $1 WHERE s."Key" OPERATOR(pg_catalog.=) $3::pg_catalog.text::integer AND s."Second ""Key""" OPERATOR(pg_catalog.=) $4::pg_catalog.text::"Odd Schema"."my type" AND s."Body Text"::pg_catalog.text COLLATE pg_catalog."C" OPERATOR(pg_catalog.=) $5 AND s."Body Text" IS NOT NULL AND s."Body Text_embedding" IS NULL;

-- failure_entry
WITH found AS (SELECT pg_catalog.min(id) AS id FROM "lightretriever_queues"."lr_queue_7" WHERE key OPERATOR(pg_catalog.=) $1),
                  made AS (INSERT INTO "lightretriever_queues"."lr_queue_7" (key) SELECT $1 WHERE (SELECT id FROM found) IS NULL RETURNING id)
             SELECT COALESCE((SELECT id FROM found), (SELECT id FROM made));

-- still_pending
SELECT ARRAY[pg_catalog.format('%s', s."Key"), pg_catalog.format('%s', s."Second ""Key""")]::pg_catalog.text FROM "Odd Schema"."My ""Table""" s WHERE s."Body Text" IS NOT NULL AND s."Body Text_embedding" IS NULL AND ARRAY[pg_catalog.format('%s', s."Key"), pg_catalog.format('%s', s."Second ""Key""")]::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]);

-- forget_keys
DELETE FROM "lightretriever_queues"."lr_queue_7" WHERE key::pg_catalog.text OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]);

-- entry_keys
SELECT key::pg_catalog.text, pg_catalog.bool_or(failed_at IS NOT NULL) FROM "lightretriever_queues"."lr_queue_7" GROUP BY key;
