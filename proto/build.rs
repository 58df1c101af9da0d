//! Compiles `loopd/v1/*.proto` with protox (pure Rust, no `protoc`), then
//! generates the prost messages and tonic services from the descriptors.

use std::{env, fs, io, path::PathBuf};

/// The proto files of `package loopd.v1`, relative to this crate.
const PROTOS: &[&str] = &[
    "loopd/v1/actions.proto",
    "loopd/v1/loops.proto",
    "loopd/v1/scheduler.proto",
    "loopd/v1/futures.proto",
    "loopd/v1/events.proto",
    "loopd/v1/metrics.proto",
    "loopd/v1/daemon.proto",
    "loopd/v1/streams.proto",
    "loopd/v1/net.proto",
    "loopd/v1/process.proto",
    "loopd/v1/signals.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=loopd");
    // Keeps comments (source_code_info) and the imported google/protobuf
    // files, so the set is complete for reflection and for the doc tests.
    let fds = protox::compile(PROTOS, ["."])?;
    write_descriptor_set(&fds)?;
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Stream chunks share the daemon's buffers instead of being copied.
        .bytes(".loopd.v1.ByteChunk.data")
        .compile_fds(fds)?;
    Ok(())
}

/// Writes the encoded set to `$OUT_DIR/loopd_descriptor.bin` for `lib.rs`.
fn write_descriptor_set(fds: &prost_types::FileDescriptorSet) -> io::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out.join("loopd_descriptor.bin"),
        prost::Message::encode_to_vec(fds),
    )
}
