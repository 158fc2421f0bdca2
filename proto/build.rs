//! Compiles `walkforward/v1/*.proto` with protox (pure Rust: no `protoc` binary needed),
//! and keeps the descriptor set for gRPC server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "walkforward/v1/dataset.proto",
        "walkforward/v1/sweep.proto",
        "walkforward/v1/worker.proto",
        "walkforward/v1/live.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("walkforward_descriptor.bin"), descriptors.encode_to_vec())?;
    // Every service decodes through `budget::BudgetCodec`: a reported result is checked
    // against its job's shape before it is materialised.
    tonic_prost_build::configure().codec_path("crate::budget::BudgetCodec").compile_fds(descriptors)?;
    Ok(())
}
