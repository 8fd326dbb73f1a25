//! Shows the guest's filesystem for services/tests/wasm_preopens.rs. Each argument is one
//! command and prints one line:
//! - `read:PATH` → `read PATH: ok <content>` or `read PATH: error`;
//! - `write:PATH` → writes `written` to PATH: `write PATH: ok` or `write PATH: error`;
//! - `preopens` → `preopens: <name> <name> …`, the names of descriptors 3, 4, … as WASI
//!   reports them (`fd_prestat_dir_name`), up to the first that is not a preopen.

use std::fs;

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn fd_prestat_get(fd: i32, out: i32) -> i32;
    fn fd_prestat_dir_name(fd: i32, buf: i32, len: i32) -> i32;
}

fn preopens() -> Vec<String> {
    let mut names = Vec::new();
    for fd in 3.. {
        // The prestat: a tag (u8, padded to 4) then the name's length (u32).
        let mut prestat = [0u32; 2];
        // SAFETY: `prestat` is 8 bytes, what fd_prestat_get writes.
        if unsafe { fd_prestat_get(fd, prestat.as_mut_ptr() as i32) } != 0 {
            break;
        }
        let mut name = vec![0u8; prestat[1] as usize];
        // SAFETY: `name` has exactly the length the call is told.
        let errno = unsafe { fd_prestat_dir_name(fd, name.as_mut_ptr() as i32, name.len() as i32) };
        assert_eq!(errno, 0, "fd_prestat_dir_name({fd})");
        names.push(String::from_utf8_lossy(&name).into_owned());
    }
    names
}

fn main() {
    for arg in std::env::args().skip(1) {
        match arg.split_once(':') {
            Some(("read", path)) => match fs::read_to_string(path) {
                Ok(text) => println!("read {path}: ok {}", text.trim_end()),
                Err(_) => println!("read {path}: error"),
            },
            Some(("write", path)) => match fs::write(path, "written") {
                Ok(()) => println!("write {path}: ok"),
                Err(_) => println!("write {path}: error"),
            },
            _ if arg == "preopens" => println!("preopens: {}", preopens().join(" ")),
            _ => panic!("unknown command {arg:?}"),
        }
    }
}
