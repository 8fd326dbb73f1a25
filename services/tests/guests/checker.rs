//! The test suites' checker (built for wasm32-wasip1 by `services/tests/grading.rs`; `checker.c`
//! for containers): `checker INPUT EXPECTED ACTUAL` accepts (exit 0) when ACTUAL's tokens are a
//! permutation of EXPECTED's, else rejects (exit 1); its stdout is the message.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    let mut expected: Vec<String> = read(&args[2]).split_whitespace().map(String::from).collect();
    let mut actual: Vec<String> = read(&args[3]).split_whitespace().map(String::from).collect();
    expected.sort();
    actual.sort();
    if expected == actual {
        println!("ok: a permutation of the {} expected tokens", expected.len());
    } else {
        println!("not a permutation of the expected tokens");
        std::process::exit(1);
    }
}
