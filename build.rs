//! Embeds an rpath to libtorch in every binary, test and example of this
//! package, so that they run without LD_LIBRARY_PATH. `torch-sys` publishes
//! the directory it linked against as `DEP_TCH_LIBTORCH_LIB`.
//!
//! It also links libtorch here, so that `libtorch_cpu.so` comes before
//! `libopenblas.so` (ndarray-linalg's LAPACK) in every binary's list of
//! needed libraries. libtorch carries MKL's BLAS and calls its own `sgemm_`
//! through the dynamic linker, which takes the first definition in that list:
//! with OpenBLAS first, every matrix product of libtorch (linear layers,
//! their gradients) ran in OpenBLAS, with a generic kernel and threads of its
//! own that fought libtorch's (measured: the robust recipe's cross-validation
//! 7x slower in the `covid-cxr` binary than in an example that does not link
//! OpenBLAS). `tests/blas_order.rs` checks the order.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-link-search=native={lib}");
        println!("cargo:rustc-link-lib=dylib=torch_cpu");
        println!("cargo:rustc-link-lib=dylib=c10");
        println!("cargo:rustc-env=COVID_CXR_LIBTORCH_LIB={lib}");
    }
}
