//! A job that leaves files for `artifacts` (services/tests/artifacts.rs): three regular files
//! below `out/` (one of 2.5 MB, so it is stored in several chunks), a symlink and a hard link
//! there, and the hard link's other name outside `out/`. With the argument `huge`: only a 2 GiB
//! sparse file `huge.bin`.

use std::fs;

/// The bytes of `out/sub/b.bin`: xorshift32 from a fixed seed (the test makes the same).
fn big() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..2_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

// `std::os::wasi::fs::symlink_path` is unstable: call WASI's `path_symlink` directly, in the one
// preopen (fd 3, the job's `/`).
#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    fn path_symlink(old: i32, old_len: i32, fd: i32, new: i32, new_len: i32) -> i32;
}

fn symlink(target: &str, link: &str) {
    // SAFETY: both strings outlive the call, which only reads them.
    let errno = unsafe {
        path_symlink(
            target.as_ptr() as i32,
            target.len() as i32,
            3,
            link.as_ptr() as i32,
            link.len() as i32,
        )
    };
    assert_eq!(errno, 0, "path_symlink {link} -> {target}");
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("huge") {
        // A 2 GiB file that takes no space (sparse): the collector must cut it, not read it.
        let f = fs::File::create("huge.bin").expect("create huge.bin");
        f.set_len(2 << 30).expect("set_len 2 GiB");
        println!("huge");
        return;
    }
    fs::create_dir_all("out/sub").expect("mkdir out/sub");
    fs::write("out/a.txt", b"alpha\n").expect("write a.txt");
    fs::write("out/c.txt", "gamma ".repeat(1000)).expect("write c.txt");
    fs::write("out/sub/b.bin", big()).expect("write b.bin");
    symlink("a.txt", "out/link");
    fs::write("private.txt", b"not for artifacts\n").expect("write private.txt");
    fs::hard_link("private.txt", "out/hard").expect("hard link");
    println!("wrote");
}
