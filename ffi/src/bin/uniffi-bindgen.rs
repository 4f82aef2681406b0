//! The binding generator for shoal's FFI, from the uniffi the library is
//! built with: `uniffi-bindgen generate <libshoal_ffi.so> --language
//! kotlin --out-dir DIR` (see `ffi/generate`).

fn main() {
    uniffi::uniffi_bindgen_main()
}
