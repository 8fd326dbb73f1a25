//! A WASI 0.2 command (a component exporting `wasi:cli/run`) for the component tests
//! (`wasm-backend/tests/components.rs`, `services/tests/components.rs`). Built at test time with
//! `rustc --edition 2021 -O --target wasm32-wasip2 component.rs` (see `build_component` there);
//! `scripts/setup-test.sh` installs the target. The first argument picks what it does.

use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        // stdout and stderr, then exit 0.
        "hello" => {
            println!("hello from a component");
            eprintln!("and its stderr");
        }
        // stdin to stdout.
        "cat" => {
            let mut input = Vec::new();
            std::io::stdin().read_to_end(&mut input).unwrap();
            std::io::stdout().write_all(&input).unwrap();
        }
        // exit with the code in the second argument.
        "exit" => std::process::exit(arg(2).parse().unwrap_or(99)),
        // a busy loop, forever (fuel, cancel).
        "spin" => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // grow the heap 1 MiB at a time, forever (memory limit).
        "alloc" => {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                kept.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&kept);
            }
        }
        // a line every 20 ms, forever (live streaming, cancel while asleep in the host).
        "ticks" => {
            for i in 0u64.. {
                println!("tick {i}");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        // the job's filesystem: list `/`, print `/in/data.txt`, write `/out.txt` and read it back;
        // with a size in the second argument, write that many bytes to `/big` and report the error.
        "files" => {
            let mut names: Vec<String> = std::fs::read_dir("/")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            println!("ls / = {}", names.join(","));
            match std::fs::read_to_string("/in/data.txt") {
                Ok(data) => println!("data = {data}"),
                Err(e) => println!("data: {e}"),
            }
            std::fs::write("/out.txt", b"written").unwrap();
            println!("out = {}", std::fs::read_to_string("/out.txt").unwrap());
            if let Ok(size) = arg(2).parse::<usize>() {
                match std::fs::write("/big", vec![7u8; size]) {
                    Ok(()) => println!("big: ok"),
                    Err(e) => println!("big: errno {}", e.raw_os_error().unwrap_or(-1)),
                }
            }
        }
        // a Rust panic: `unreachable` in wasm.
        "panic" => panic!("the component panicked on purpose"),
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
