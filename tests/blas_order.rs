//! libtorch must do its matrix products with its own BLAS (MKL, inside `libtorch_cpu.so`), not
//! with OpenBLAS, which ndarray-linalg links for LIME's least squares. Both define `sgemm_`, and
//! the dynamic linker gives every caller the first definition in the binary's list of needed
//! libraries; `build.rs` puts libtorch first. With OpenBLAS first, libtorch's linear layers ran in
//! OpenBLAS (a generic kernel, threads of its own fighting libtorch's): the robust recipe's
//! cross-validation took 179 s in the `covid-cxr` binary against 27 s in an example that did not
//! link OpenBLAS. This test binary links both (it calls LIME's ridge) and asks the dynamic linker
//! which library `sgemm_` comes from.
use std::ffi::{c_char, c_int, c_void, CStr};

#[repr(C)]
struct DlInfo {
    dli_fname: *const c_char,
    dli_fbase: *mut c_void,
    dli_sname: *const c_char,
    dli_saddr: *mut c_void,
}

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

/// The file of the library whose definition of `symbol` the dynamic linker hands out.
fn provider(symbol: &CStr) -> Option<String> {
    // SAFETY: RTLD_DEFAULT is the null handle; dladdr fills `info` for an address in a loaded object.
    unsafe {
        let addr = dlsym(std::ptr::null_mut(), symbol.as_ptr());
        if addr.is_null() {
            return None;
        }
        let mut info = DlInfo {
            dli_fname: std::ptr::null(),
            dli_fbase: std::ptr::null_mut(),
            dli_sname: std::ptr::null(),
            dli_saddr: std::ptr::null_mut(),
        };
        if dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned())
    }
}

#[test]
fn libtorch_uses_its_own_sgemm_not_openblas() {
    // link and use both: LIME's ridge solve (ndarray-linalg, OpenBLAS) and a libtorch matmul
    let x = ndarray::Array2::from_shape_fn((20, 3), |(i, j)| ((i * 7 + j * 3) % 11) as f64 / 10.0);
    let y = ndarray::Array1::from_shape_fn(20, |i| (i % 3) as f64);
    let w = ndarray::Array1::ones(20);
    let fit = covid_cxr::explain::lime::weighted_ridge(x.view(), y.view(), w.view(), 1.0).unwrap();
    assert!(fit.intercept.is_finite());
    let a = tch::Tensor::ones([64, 64], (tch::Kind::Float, tch::Device::Cpu));
    assert_eq!(a.matmul(&a).double_value(&[0, 0]), 64.0);

    let lib = provider(c"sgemm_").expect("sgemm_ is not defined in any loaded library");
    assert!(
        lib.contains("libtorch_cpu"),
        "sgemm_ resolves to {lib}, not libtorch_cpu.so: libtorch's matrix products would run in that \
         library (see build.rs)"
    );
}
