//! Encodes each line of a text file with the full (document) model; writes little-endian f32
//! rows. For studies outside Rust that need full-model vectors of their own texts.
use lr_encoders::BertEncoder;
use lr_model::{Device, ModelInfo, ModelOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: encode_lines MODEL_DIR TEXTS.txt OUT.f32");
        std::process::exit(2);
    }
    let info = ModelInfo::inspect(std::path::Path::new(&args[1]), &ModelOptions::default()).unwrap();
    let enc = BertEncoder::load(&info, &Device::Cpu).unwrap();
    let text = std::fs::read_to_string(&args[2]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<u8> = Vec::new();
    for (i, chunk) in lines.chunks(1024).enumerate() {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|s| enc.document_ids(s).unwrap()).collect();
        for v in enc.encode_id_sequences(&ids, 64).unwrap() {
            out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        }
        eprintln!("{}/{}", ((i + 1) * 1024).min(lines.len()), lines.len());
    }
    std::fs::write(&args[3], out).unwrap();
}
