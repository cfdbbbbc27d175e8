//! Compiles proto/csi.proto with the protoc binary vendored as a crate, so the build needs no
//! system package and no network.

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc for this platform");
    let include = protoc_bin_vendored::include_path().expect("vendored protobuf includes");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(
            config,
            &["proto/csi.proto"],
            &["proto", include.to_str().expect("utf-8 path")],
        )
        .expect("compile proto/csi.proto");
    println!("cargo:rerun-if-changed=proto/csi.proto");
}
