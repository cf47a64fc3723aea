//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed),
//! writes the encoded descriptor set that the reflection service serves, and
//! generates the prost messages and tonic client and server.

use std::{env, fs, path::PathBuf};

use protox::prost::Message as _;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "proto/helpdesk/v1/conversation.proto",
    "proto/helpdesk/v1/conversation_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }

    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("helpdesk_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // Deterministic order for attributes: responses are stable and the
        // idempotency fingerprint never depends on hash order.
        .btree_map(".helpdesk.v1.Conversation.attributes")
        // Malformed requests become INVALID_ARGUMENT instead of INTERNAL.
        .codec_path("crate::grpc::codec::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
