//! Generates the protobuf types of the client protocol (`proto/herald/v1/client.proto`)
//! with protox, a pure-Rust protobuf compiler, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = "herald/v1/client.proto";
    let descriptors = protox::compile([file], [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={proto_root}/{file}");
    Ok(())
}
