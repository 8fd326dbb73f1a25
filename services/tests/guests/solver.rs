//! The test suites' program under test (built for wasm32-wasip1 by `services/tests/grading.rs`,
//! and the same logic as `solver.c` for containers). Reads one command from stdin:
//! `sum A B ...` prints the sum; `div A B` prints A/B with 9 decimals; `perm X Y ...` prints the
//! tokens reversed (one of many right answers); `loop` never ends; `alloc` grows memory without
//! bound; `crash` aborts; `exit N` exits with N; `flood` writes forever; `write PATH` writes a
//! file and prints whether PATH existed before; `cat PATH` prints a file. With arguments, the
//! command is the arguments (a build step has no stdin).
use std::io::{Read, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut input = args.join(" ");
    if args.is_empty() {
        std::io::stdin().read_to_string(&mut input).unwrap();
    }
    let mut t = input.split_whitespace();
    let out = std::io::stdout();
    let mut out = out.lock();
    match t.next().unwrap_or("") {
        "sum" => {
            let s: i64 = t.map(|x| x.parse::<i64>().unwrap()).sum();
            writeln!(out, "{s}").unwrap();
        }
        "div" => {
            let a: f64 = t.next().unwrap().parse().unwrap();
            let b: f64 = t.next().unwrap().parse().unwrap();
            writeln!(out, "{:.9}", a / b).unwrap();
        }
        "perm" => {
            let v: Vec<&str> = t.collect();
            let r: Vec<&str> = v.into_iter().rev().collect();
            writeln!(out, "{}", r.join(" ")).unwrap();
        }
        "loop" => {
            let mut x: u64 = 1;
            loop {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if x == 0 {
                    break;
                }
            }
            writeln!(out, "{x}").unwrap();
        }
        "alloc" => {
            let mut v: Vec<Vec<u8>> = Vec::new();
            loop {
                v.push(vec![1u8; 1 << 20]);
                if v.len() > 1 << 20 {
                    break;
                }
            }
            writeln!(out, "{}", v.len()).unwrap();
        }
        "crash" => std::process::abort(),
        "exit" => std::process::exit(t.next().unwrap().parse().unwrap()),
        "flood" => loop {
            out.write_all(&[b'y'; 4096]).unwrap();
        },
        "write" => {
            let path = t.next().unwrap();
            let existed = std::path::Path::new(path).exists();
            std::fs::write(path, b"mine").unwrap();
            writeln!(out, "{}", if existed { "seen" } else { "fresh" }).unwrap();
        }
        "cat" => {
            let data = std::fs::read(t.next().unwrap()).unwrap();
            out.write_all(&data).unwrap();
        }
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2);
        }
    }
}
