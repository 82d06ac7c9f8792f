//! The model registry: `lr_register_model`, `lr_drop_model`, and catalog reads.

use std::path::Path;

use lr_model::{ModelInfo, ModelOptions};
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::error::{raise, require_superuser, row_or_none, Code, OrRaise};

/// The registered model `name`, as recorded at registration.
pub fn load_model(name: &str) -> ModelInfo {
    let info = row_or_none(Spi::get_one_with_args::<JsonB>(
        "SELECT info FROM lightretriever.lr_models WHERE name = $1",
        &[name.into()],
    ))
    .flatten();
    match info {
        Some(JsonB(v)) => serde_json::from_value(v).or_raise(Code::ERRCODE_DATA_CORRUPTED),
        None => raise(
            Code::ERRCODE_UNDEFINED_OBJECT,
            format!("lightretriever: model \"{name}\" is not registered"),
            Some("Register it with lightretriever.lr_register_model(name, path); see lightretriever.lr_models."),
        ),
    }
}

/// Registers a model directory (Hugging Face layout) under `name`. Validates it first:
/// config.json, tokenizer.json and safetensors weights must be present and well-formed.
#[pg_extern(volatile, parallel_unsafe)]
fn lr_register_model(name: &str, path: &str, options: default!(JsonB, "'{}'")) -> JsonB {
    require_superuser("register models");
    let opts = ModelOptions::from_json(&options.0).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let info = ModelInfo::inspect(Path::new(path), &opts).or_raise(Code::ERRCODE_INVALID_PARAMETER_VALUE);
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM lightretriever.lr_models WHERE name = $1)",
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
    let insert = Spi::run_with_args(
        "INSERT INTO lightretriever.lr_models
           (name, path, family, architecture, hidden_size, vocab_size, max_length, pooling,
            has_lm_head, options, info)
         VALUES ($1, $2, $3->>'family', $3->>'architecture', ($3->>'hidden_size')::int,
                 ($3->>'vocab_size')::int, ($3->>'max_length')::int, $3->>'pooling',
                 ($3->>'has_lm_head')::bool, $4, $3)",
        &[name.into(), path.into(), JsonB(info_json.clone()).into(), options.into()],
    );
    if let Err(e) = insert {
        // The CHECK on names is the usual cause.
        raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("lightretriever: cannot register model \"{name}\": {e}"),
            Some("Model names are 1-63 characters: letters, digits, '_', '.', '-', starting with a letter or digit."),
        );
    }
    JsonB(info_json)
}

/// Unregisters a model and deletes its query tables (files are removed when the transaction
/// commits). Returns false when no such model was registered.
#[pg_extern(volatile, parallel_unsafe)]
fn lr_drop_model(name: &str) -> bool {
    require_superuser("drop models");
    let files: Vec<String> = Spi::connect(|client| {
        client
            .select(
                "SELECT file FROM lightretriever.lr_query_tables WHERE model = $1",
                None,
                &[name.into()],
            )?
            .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .or_raise(Code::ERRCODE_INTERNAL_ERROR);
    let deleted = row_or_none(Spi::get_one_with_args::<String>(
        "DELETE FROM lightretriever.lr_models WHERE name = $1 RETURNING name",
        &[name.into()],
    ))
    .flatten();
    crate::query_table::remove_files_on_commit(files);
    crate::inference::forget_local(name);
    deleted.is_some()
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::test_support::*;
    use pgrx::prelude::*;

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

    #[pg_test(error = "lightretriever: invalid model option: unknown field `poolng`, expected one of `pooling`, `max_length`, `adapter`, `sparse_top_k`")]
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

    #[pg_test(error = "lightretriever: model \"nope\" is not registered")]
    fn unknown_model_fails() {
        Spi::run("SELECT lightretriever.lr_encode_document('x', 'nope')").unwrap();
    }

    #[pg_test(error = "lightretriever: no model given and lightretriever.default_model is not set")]
    fn missing_default_model_fails() {
        Spi::run("SELECT lightretriever.lr_encode_document('x')").unwrap();
    }
}
