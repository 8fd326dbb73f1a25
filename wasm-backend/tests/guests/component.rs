//! A WASI 0.2 command (a component exporting `wasi:cli/run`) for the component tests
//! (`wasm-backend/tests/components.rs`, `services/tests/components.rs`). Built at test time with
//! `rustc --edition 2021 -O --target wasm32-wasip2 component.rs` (see `build_component` there);
//! `scripts/setup-test.sh` installs the target. The first argument picks what it does — or, when
//! the variable `MODE` is set, `MODE` does (so that the arguments can be entirely the job's).
//! Also the guest of the conformance suite's component target
//! (`wasm-backend/tests/conformance_components.rs`).

use std::io::{Read, Write};
use std::time::Duration;

fn sleep_ms(ms: &str) {
    std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let mode = std::env::var("MODE").unwrap_or_else(|_| arg(1).to_owned());
    match mode.as_str() {
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
        // argv, each entry followed by a NUL byte (selected by `MODE=argv`).
        "argv" => {
            let mut out = std::io::stdout().lock();
            for a in std::env::args_os() {
                out.write_all(a.as_encoded_bytes()).unwrap();
                out.write_all(b"\0").unwrap();
            }
        }
        // the environment, each `NAME=value` followed by a NUL byte, in order.
        "env" => {
            let mut out = std::io::stdout().lock();
            for (k, v) in std::env::vars_os() {
                out.write_all(k.as_encoded_bytes()).unwrap();
                out.write_all(b"=").unwrap();
                out.write_all(v.as_encoded_bytes()).unwrap();
                out.write_all(b"\0").unwrap();
            }
        }
        // the file at the path in the second argument to stdout; exit 1 if it cannot be opened.
        "cat-file" => match std::fs::File::open(arg(2)) {
            Ok(mut file) => {
                std::io::copy(&mut file, &mut std::io::stdout().lock()).unwrap();
            }
            Err(e) => {
                eprintln!("{}: {e}", arg(2));
                std::process::exit(1);
            }
        },
        // sleep the milliseconds in the second argument, then exit 0.
        "sleep" => sleep_ms(arg(2)),
        // `y\n` forever.
        "yes" => {
            let lines = b"y\n".repeat(500);
            let mut out = std::io::stdout().lock();
            loop {
                out.write_all(&lines).unwrap();
            }
        }
        // `tick\n` about every 10 ms, forever.
        "tick" => loop {
            println!("tick");
            sleep_ms("10");
        },
        // the line in the second argument, a pause of the third (ms), the line in the fourth.
        "bursts" => {
            println!("{}", arg(2));
            sleep_ms(arg(3));
            println!("{}", arg(4));
        }
        // writes `/big` in 1 MiB chunks up to the MiB count in the second argument; the first
        // failure is printed with its errno and the bytes written before it, then exit 1.
        "fill" => {
            let mib: usize = arg(2).parse().unwrap_or(0);
            let chunk = vec![7u8; 1 << 20];
            let mut file = std::fs::File::create("/big").unwrap();
            let mut written = 0usize;
            for _ in 0..mib {
                if let Err(e) = file.write_all(&chunk) {
                    let errno = e.raw_os_error().unwrap_or(-1);
                    println!("fill: errno {errno} after {written} bytes ({e})");
                    std::process::exit(1);
                }
                written += chunk.len();
            }
            println!("fill: ok, {written} bytes");
        }
        // a Rust panic: `unreachable` in wasm.
        "panic" => panic!("the component panicked on purpose"),
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
