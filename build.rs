//! Embeds an rpath to libtorch in every binary, test and example of this
//! package, so that they run without LD_LIBRARY_PATH. `torch-sys` publishes
//! the directory it linked against as `DEP_TCH_LIBTORCH_LIB`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=COVID_CXR_LIBTORCH_LIB={lib}");
    }
}
