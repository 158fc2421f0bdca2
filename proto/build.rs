//! Compiles `walkforward/v1/*.proto` with protox (pure Rust: no `protoc` binary needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["walkforward/v1/dataset.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().build_client(false).build_server(false).compile_fds(descriptors)?;
    Ok(())
}
