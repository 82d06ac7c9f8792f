//! The catalog: the model registry (`lr_register_model`, `lr_drop_model`, reads and locks of
//! models), the query-table catalog, and files removed with their rows.

pub mod files;
pub mod nodes;
pub mod query_tables;
pub mod table_store;

use std::path::Path;

use lr_model::{ModelInfo, ModelOptions};
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error::{raise, require_superuser, required, row_or_none, Code, OrRaise};

/// The registered model `name`, as recorded at registration.
pub fn load_model(name: &str) -> ModelInfo {
    // The record's paths are trusted (the worker loads them) because only a superuser can
    // write the catalog: its owner must still be one.
    let found = row_or_none(crate::spi::read_two::<JsonB, pg_sys::Oid>(
        "SELECT m.info, c.relowner FROM pg_catalog.pg_class c
           LEFT JOIN lightretriever.lr_models m ON m.name OPERATOR(pg_catalog.=) $1
          WHERE c.oid OPERATOR(pg_catalog.=) 'lightretriever.lr_models'::pg_catalog.regclass",
        &[name.into()],
    ));
    let info = match found {
        Some((info, Some(owner))) => {
            crate::security::require_superuser_owner(owner, "the model catalog lightretriever.lr_models");
            info
        }
        _ => None,
    };
    match info {
        Some(JsonB(v)) => serde_json::from_value(v).or_raise(Code::ERRCODE_DATA_CORRUPTED),
        None => raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("lightretriever: model \"{name}\" is not registered"),
            Some(nodes::worker_hint().unwrap_or("Register it with lightretriever.lr_register_model(name, path); see lightretriever.lr_models.")),
        ),
    }
}

/// Serialises the changes to model `name` within this transaction: two builds or fits of one
/// model, or a drop during a build, wait for each other instead of failing on the catalog's
/// constraints. A row lock on the model (only the catalog's writers — superusers — can take
/// one, so no ordinary role can stall these calls; an advisory lock anyone could hold).
/// A missing model is its own error.
pub fn lock_model(name: &str) {
    let locked = Spi::get_one_with_args::<bool>(
        "SELECT true FROM lightretriever.lr_models WHERE name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
        &[name.into()],
    );
    if row_or_none(locked).flatten().is_none() {
        load_model(name); // raises "not registered"
    }
}

/// The registered model `name`, kept registered until this transaction ends (a drop waits).
pub fn use_model(name: &str) -> ModelInfo {
    let locked = Spi::get_one_with_args::<bool>(
        "SELECT true FROM lightretriever.lr_models WHERE name OPERATOR(pg_catalog.=) $1 FOR KEY SHARE",
        &[name.into()],
    );
    let _ = row_or_none(locked);
    load_model(name)
}

/// Model names are what the catalog's CHECK allows; said before the insert, with the rule.
fn check_model_name(name: &str) {
    let ok = (1..=63).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        raise(
            Code::ERRCODE_INVALID_NAME,
            format!("lightretriever: \"{name}\" is not a valid model name"),
            Some("Model names are 1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit."),
        );
    }
}

/// Sizes past these are not models but mistakes (or attempts to make the server allocate
/// without bound): refused at registration.
const MAX_HIDDEN: usize = 65_536;
const MAX_VOCAB: usize = 1 << 22;
const MAX_LENGTH: usize = 1 << 20;

fn check_sizes(info: &ModelInfo) {
    for (what, value, max) in [
        ("hidden_size", info.hidden_size, MAX_HIDDEN),
        ("vocab_size", info.vocab_size, MAX_VOCAB),
        ("max_length", info.max_length, MAX_LENGTH),
    ] {
        if value == 0 || value > max {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("lightretriever: invalid model: {what} {value} is out of range (1 to {max})"),
                Some("Check config.json (and the max_length option)."),
            );
        }
    }
}

/// A PE-Rank checkpoint is checked whole (projector, placeholder token, chat template, legacy
/// tokenizer), and its passage encoder, when named, must be a registered embedding model of
/// the reranker's `embedding_size`.
fn check_reranker(info: &ModelInfo) {
    let checkpoint = lr_rerank::RerankerCheckpoint::inspect(&info.path).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    // The chat template must give a prompt with one placeholder per candidate that fits: tried
    // now on two candidates, rather than failing every later call.
    let prompts = lr_rerank::PromptBuilder::new(&checkpoint).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let prompt = prompts.prompt("a query", 2, None).unwrap_or_else(|e| {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: invalid model: the chat template of {} gives no usable ranking prompt: {e}", info.path.display()),
            None,
        )
    });
    if prompt.ids.len() + 1 > info.max_length {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "lightretriever: invalid model option: max_length {} cannot hold a prompt of two candidates ({} tokens)",
                info.max_length,
                prompt.ids.len() + 1
            ),
            None,
        );
    }
    if let Some(encoder) = &info.encoder {
        let encoder_info = load_model(encoder);
        if encoder_info.family == lr_model::ModelFamily::Reranker {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("lightretriever: encoder \"{encoder}\" is a reranker, not an embedding model"),
                None,
            );
        }
        if encoder_info.hidden_size != checkpoint.embedding_size {
            raise(
                Code::ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "lightretriever: encoder \"{encoder}\" gives {}-dimensional vectors; this reranker's embedding_size is {}",
                    encoder_info.hidden_size, checkpoint.embedding_size
                ),
                Some(&format!(
                    "Register the passage encoder the checkpoint was trained with ({}) and name it as encoder.",
                    checkpoint.encoder_name.as_deref().unwrap_or("see encoder_name in its config.json")
                )),
            );
        }
    }
}

/// Registers a model directory (Hugging Face layout) under `name`. Validates it first:
/// config.json, tokenizer.json and safetensors weights must be present and well-formed.
#[pg_extern(volatile, parallel_unsafe)]
fn lr_register_model(name: Option<&str>, path: Option<&str>, options: default!(Option<JsonB>, "'{}'")) -> JsonB {
    require_superuser("register models");
    let (name, path) = (required(name, "name"), required(path, "path"));
    let options = required(options, "options");
    check_model_name(name);
    // Two registrations of one name wait for each other (a table lock no ordinary role holds).
    Spi::run("LOCK TABLE lightretriever.lr_models IN SHARE ROW EXCLUSIVE MODE").or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let opts = ModelOptions::from_json(&options.0).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let info = ModelInfo::inspect(Path::new(path), &opts).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    check_sizes(&info);
    if info.family == lr_model::ModelFamily::Reranker {
        check_reranker(&info);
    }
    // The tokenizer must load (a broken tokenizer.json would otherwise fail every later call).
    let tokenizer = lr_tokenizer::load_tokenizer(&info.tokenizer_path(), None).unwrap_or_else(|e| {
        raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, format!("lightretriever: invalid model: {e}"), None)
    });
    let tokens = tokenizer.get_vocab_size(true);
    if tokens > info.vocab_size {
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "lightretriever: invalid model: {} has {tokens} tokens, more than the model's vocabulary of {}",
                info.tokenizer_path().display(),
                info.vocab_size
            ),
            Some("Token ids past the vocabulary have no embedding; use the tokenizer that came with the model."),
        );
    }
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM lightretriever.lr_models WHERE name OPERATOR(pg_catalog.=) $1)",
        &[name.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    if exists == Some(true) {
        raise(
            Code::ERRCODE_DUPLICATE_OBJECT,
            format!("lightretriever: model \"{name}\" is already registered"),
            Some("Drop it first with lightretriever.lr_drop_model(name)."),
        );
    }
    let info_json = serde_json::to_value(&info).expect("ModelInfo serialises");
    Spi::run_with_args(
        "INSERT INTO lightretriever.lr_models
           (name, path, family, architecture, hidden_size, vocab_size, max_length, pooling,
            has_lm_head, options, info)
         VALUES ($1, $2, $3 OPERATOR(pg_catalog.->>) 'family', $3 OPERATOR(pg_catalog.->>) 'architecture',
                 ($3 OPERATOR(pg_catalog.->>) 'hidden_size')::pg_catalog.int4, ($3 OPERATOR(pg_catalog.->>) 'vocab_size')::pg_catalog.int4,
                 ($3 OPERATOR(pg_catalog.->>) 'max_length')::pg_catalog.int4, $3 OPERATOR(pg_catalog.->>) 'pooling',
                 ($3 OPERATOR(pg_catalog.->>) 'has_lm_head')::pg_catalog.bool, $4, $3)",
        &[name.into(), path.into(), JsonB(info_json.clone()).into(), options.into()],
    )
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    nodes::remind_to_sync();
    JsonB(info_json)
}

/// Unregisters a model and deletes its query tables (files are removed when the transaction
/// commits). Returns false when no such model was registered. A model that auto-encoded
/// tables use is refused, naming them.
#[pg_extern(volatile, parallel_unsafe)]
fn lr_drop_model(name: Option<&str>) -> bool {
    require_superuser("drop models");
    let name = required(name, "name");
    // Waits for builds, fits and enables of the model that are under way.
    let _ = row_or_none(Spi::get_one_with_args::<bool>(
        "SELECT true FROM lightretriever.lr_models WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
        &[name.into()],
    ));
    let users: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT a.source::pg_catalog.text FROM lightretriever.lr_auto_encodings a
              WHERE a.model OPERATOR(pg_catalog.=) $1 OR a.sparse_model OPERATOR(pg_catalog.=) $1 ORDER BY a.id",
            None,
            &[name.into()],
        )?
        .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    if !users.is_empty() {
        raise(
            Code::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("lightretriever: model \"{name}\" is used by the auto-encoding of {}", users.join(", ")),
            Some("Disable it first: SELECT lightretriever.lr_disable_auto_encoding('<table>');"),
        );
    }
    let rerankers: Vec<String> = Spi::connect(|c| {
        c.select(
            "SELECT m.name FROM lightretriever.lr_models m
              WHERE m.info OPERATOR(pg_catalog.->>) 'encoder' OPERATOR(pg_catalog.=) $1 ORDER BY m.name",
            None,
            &[name.into()],
        )?
        .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
        .collect::<Result<Vec<_>, _>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    if !rerankers.is_empty() {
        raise(
            Code::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
            format!("lightretriever: model \"{name}\" is the passage encoder of reranker {}", rerankers.join(", ")),
            Some("Drop the reranker first (or register it again without this encoder)."),
        );
    }
    // This node's files of the model's tables (other nodes' are swept by their next write), and
    // those of this database that versions built before 0.6.0 still have.
    let files: Vec<String> = table_store::versions(Some(name), false)
        .into_iter()
        .flat_map(|t| [Some(t.local_file()), t.own_recorded_file().map(str::to_owned)])
        .flatten()
        .collect();
    let deleted = row_or_none(Spi::get_one_with_args::<String>(
        "DELETE FROM lightretriever.lr_models WHERE name OPERATOR(pg_catalog.=) $1 RETURNING name",
        &[name.into()],
    ))
    .flatten();
    files::remove_files_on_commit(files);
    crate::inference::forget_local(name);
    nodes::remind_to_sync();
    deleted.is_some()
}

/// Refuses a model without a masked-LM head where sparse vectors are asked of it.
pub fn require_lm_head(name: &str, info: &lr_model::ModelInfo) {
    if !info.has_lm_head {
        raise(
            Code::ERRCODE_WRONG_OBJECT_TYPE,
            format!("lightretriever: model \"{name}\" has no masked-LM head, so it cannot encode sparse vectors"),
            Some("Register a SPLADE-style BertForMaskedLM model (the default is splade-tiny) and pass it as model."),
        );
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::*;
    use pgrx::prelude::*;

    /// A catalog row's `file` is used, moved or removed only when it is a plain file of this
    /// database's in the tables directory: a crafted row (a restored dump) cannot reach out of it.
    #[pg_test]
    fn only_this_databases_plain_table_files_are_its_own() {
        let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
        let row = |file: String| super::table_store::StoredTable {
            model: "m".into(),
            instruction: String::new(),
            version: 1,
            checksum: 0,
            file,
            rows: 0,
            dims: 0,
        };
        let own = |file: String| row(file.clone()).own_recorded_file().map(str::to_owned);
        let plain = format!("lightretriever/tables/db{database}-m-0000000000000000-v1.lrt");
        assert_eq!(own(plain.clone()), Some(plain));
        assert_eq!(own(format!("lightretriever/tables/db{database}-x/../../../../etc/passwd")), None);
        assert_eq!(own(format!("lightretriever/tables/db{database}-")), None);
        assert_eq!(own(format!("lightretriever/tables/db{}-m.lrt", database + 1)), None);
    }

    #[pg_test]
    fn registers_and_drops_the_default_model() {
        register_dense_model();
        let row = Spi::get_three::<String, i32, i32>(
            "SELECT family || '/' || architecture || '/' || pooling, hidden_size, max_length
               FROM lightretriever.lr_models WHERE name = 'minilm'",
        )
        .unwrap();
        assert_eq!(row, (Some("bert/BertModel/mean".into()), Some(384), Some(256)));
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_drop_model('minilm')").unwrap(), Some(true));
        assert_eq!(Spi::get_one::<bool>("SELECT lightretriever.lr_drop_model('minilm')").unwrap(), Some(false));
    }

    #[pg_test]
    fn options_override_pooling_and_length() {
        Spi::run_with_args(
            "SELECT lightretriever.lr_register_model('m2', $1, '{\"pooling\": \"cls\", \"max_length\": 128}')",
            &[dense_model_dir().into()],
        )
        .unwrap();
        let row = Spi::get_two::<String, i32>("SELECT pooling, max_length FROM lightretriever.lr_models WHERE name = 'm2'").unwrap();
        assert_eq!(row, (Some("cls".into()), Some(128)));
    }

    #[pg_test(error = "lightretriever: invalid model: model directory /nonexistent/model does not exist or is not readable by the server")]
    fn registering_a_missing_directory_fails() {
        Spi::run("SELECT lightretriever.lr_register_model('x', '/nonexistent/model')").unwrap();
    }

    #[pg_test(error = "lightretriever: invalid model option: unknown field `poolng`, expected one of `pooling`, `max_length`, `adapter`, `sparse_top_k`, `encoder`")]
    fn unknown_options_fail() {
        Spi::run_with_args(
            "SELECT lightretriever.lr_register_model('x', $1, '{\"poolng\": \"cls\"}')",
            &[dense_model_dir().into()],
        )
        .unwrap();
    }

    #[pg_test(error = "lightretriever: model \"minilm\" is already registered")]
    fn registering_twice_fails() {
        register_dense_model();
        register_dense_model();
    }

    #[pg_test(error = "lightretriever: only superusers may register models")]
    fn only_superusers_register() {
        Spi::run("CREATE ROLE lr_plain_user").unwrap();
        Spi::run("SET LOCAL ROLE lr_plain_user").unwrap();
        register_dense_model();
    }

    /// Once the role owning the model catalog, or the extension, is no longer a superuser, its
    /// model records are not used and nothing runs with its rights: such a role could write
    /// records naming any file the encoder worker would load.
    #[pg_test]
    fn a_demoted_owner_is_not_trusted() {
        register_dense_model();
        Spi::run("CREATE ROLE lr_demoted; CREATE TABLE docs (id int PRIMARY KEY, body text)").unwrap();
        Spi::run("ALTER TABLE lightretriever.lr_models OWNER TO lr_demoted").unwrap();
        let message = error_of("SELECT lightretriever.lr_encode_document('x', 'minilm')");
        assert!(message.contains("lightretriever.lr_models is owned by role \"lr_demoted\", which is not a superuser"), "{message}");
        Spi::run("ALTER TABLE lightretriever.lr_models OWNER TO CURRENT_USER").unwrap();
        Spi::run("UPDATE pg_extension SET extowner = 'lr_demoted'::regrole WHERE extname = 'lightretriever'").unwrap();
        let message = error_of("SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm')");
        assert!(message.contains("the extension lightretriever is owned by role \"lr_demoted\", which is not a superuser"), "{message}");
        Spi::run("ALTER ROLE lr_demoted SUPERUSER").unwrap();
        Spi::run("SELECT lightretriever.lr_enable_auto_encoding('docs', 'body', 'minilm')").unwrap();
    }

    #[pg_test(error = "lightretriever: model \"nope\" is not registered")]
    fn unknown_model_fails() {
        Spi::run("SELECT lightretriever.lr_encode_document('x', 'nope')").unwrap();
    }

    #[pg_test(error = "lightretriever: no model given and lightretriever.default_model is not set")]
    fn missing_default_model_fails() {
        Spi::run("SELECT lightretriever.lr_encode_document('x')").unwrap();
    }

    #[pg_test]
    fn registration_refuses_bad_names_tokenizers_and_sizes() {
        assert_eq!(
            error_of("SELECT lightretriever.lr_register_model('no spaces please', '/x')"),
            "lightretriever: \"no spaces please\" is not a valid model name"
        );
        let dir = std::env::temp_dir().join(format!("lr-pgtest-bad-tokenizer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(dense_model_dir()).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
        std::fs::write(dir.join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
        let e = error_of(&format!("SELECT lightretriever.lr_register_model('badtok', '{}')", dir.display()));
        assert!(e.starts_with("lightretriever: invalid model:") && e.contains("tokenizer"), "{e}");
        let e = error_of(&format!(
            "SELECT lightretriever.lr_register_model('huge', '{}', '{{\"max_length\": 1000000000}}')",
            dense_model_dir()
        ));
        assert_eq!(e, "lightretriever: invalid model option: max_length 1000000000 must be between 2 and the model's 512 positions");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[pg_test]
    fn a_model_in_use_is_not_dropped() {
        register_dense_model();
        Spi::run("CREATE TABLE in_use (id int PRIMARY KEY, body text); SELECT lightretriever.lr_enable_auto_encoding('in_use', 'body', 'minilm')")
            .unwrap();
        assert_eq!(
            error_of("SELECT lightretriever.lr_drop_model('minilm')"),
            "lightretriever: model \"minilm\" is used by the auto-encoding of in_use"
        );
    }

    #[pg_test]
    fn the_device_setting_is_checked() {
        let e = error_of("SET lightretriever.device = 'gpu'");
        assert_eq!(e, "invalid value for parameter \"lightretriever.device\": \"gpu\"");
        Spi::run("SET LOCAL lightretriever.device = 'cuda:1'; SET LOCAL lightretriever.device = 'cpu'").unwrap();
    }

    #[pg_test]
    fn fits_refuse_non_text_columns_and_sparse_queries_need_a_sparse_model() {
        register_dense_model();
        Spi::run("CREATE TABLE nums (id int PRIMARY KEY, n int)").unwrap();
        assert_eq!(
            error_of("SELECT lightretriever.lr_fit_query_table('minilm', 'nums', 'n')"),
            "lightretriever: column \"n\" of public.nums is integer, not text"
        );
        assert_eq!(
            error_of("SELECT lightretriever.lr_encode_query_sparse('wing', 'minilm')"),
            "lightretriever: model \"minilm\" has no masked-LM head, so it cannot encode sparse vectors"
        );
    }
}
