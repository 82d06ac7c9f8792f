//! lr-example-sqlx migrate | add ID TITLE BODY | search QUERY [--hybrid | --rerank]

use lr_example_sqlx as app;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pool = app::connect().await?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => app::migrate(&pool).await?,
        ["add", id, title, body] => {
            app::add_doc(&pool, id.parse()?, title, body).await?;
            println!("{}", if app::wait_for_encoding(&pool, 120.0).await? { "encoded" } else { "still queued" });
        }
        ["search", q, rest @ ..] => {
            let hits = match rest {
                [] => app::search_dense(&pool, q, 5).await?,
                ["--hybrid"] => app::search_hybrid(&pool, q, 5).await?,
                ["--rerank"] => app::search_reranked(&pool, q, 5).await?,
                _ => return Err("search QUERY [--hybrid | --rerank]".into()),
            };
            for h in hits {
                println!("{}\t{:.4}\t{}", h.id, h.score, h.title);
            }
        }
        _ => return Err("usage: lr-example-sqlx migrate | add ID TITLE BODY | search QUERY [--hybrid | --rerank]".into()),
    }
    Ok(())
}
