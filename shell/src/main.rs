fn main() { eprintln!("hutch-shell: not implemented"); std::process::exit(1) }
