//! The `cuda` feature on a real GPU: the reranker on `cuda:0` places the reference's candidates
//! in the reference's order, with its scores (a little more room than the CPU's, for GPU sums).
//! Compiled only with `--features cuda`; run by `make test-cuda` on a machine with an NVIDIA GPU.

#![cfg(feature = "cuda")]

use lr_model::parse_device;
use lr_rerank::{Reranker, RerankerCheckpoint, Window};
use lr_testkit::*;

#[test]
fn the_reranker_on_a_gpu_gives_the_reference_rankings() {
    let gpu = parse_device("cuda:0").unwrap_or_else(|e| panic!("make test-cuda needs a visible GPU: {e}"));
    let checkpoint = RerankerCheckpoint::inspect(&tiny_models_dir().join("pe-rank-tiny")).unwrap();
    let reranker = Reranker::load(&checkpoint, &gpu).unwrap();
    let r = tiny_reference("pe-rank-tiny");
    let cases = r["cases"].as_array().unwrap();
    let embeddings: Vec<Vec<Vec<f32>>> = cases.iter().map(|c| matrix(&c["embeddings"])).collect();
    let passages: Vec<Option<Vec<String>>> = cases
        .iter()
        .map(|c| (c["mode"] == "text").then(|| c["passages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect()))
        .collect();
    let windows: Vec<Window> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| Window { query: c["query"].as_str().unwrap(), embeddings: &embeddings[i], passages: passages[i].as_deref() })
        .collect();
    // All the windows in one batch: the GPU path of the batched prefill and lockstep decode.
    for (c, got) in cases.iter().zip(reranker.rank(&windows).unwrap()) {
        assert_eq!(got.order, indices(&c["permutation"]), "{}", c["query"]);
        let want = floats(&c["scores"]);
        let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
        assert_within(&got.scores, &want, 5e-4 * scale, c["query"].as_str().unwrap());
    }
}
