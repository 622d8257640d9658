//! `cargo run -p minion-dnsd --features fuzz --example fuzz -- --iterations N [--seed S] [--campaigns C]`:
//! a longer run of the deterministic mutation fuzzer over dnsd's request path
//! ([`minion_dnsd::fuzz`]). Exits non-zero with the seed, iteration and input (hex)
//! of the first wrong reply or panic; rerun with that seed to reproduce it.

use clap::Parser;

/// Fuzzes dnsd's request path with mutated queries and upstream answers.
#[derive(Parser)]
struct Args {
    /// Inputs per campaign.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// Seed of the first campaign (the next ones use the following seeds).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of campaigns.
    #[arg(long, default_value_t = 1)]
    campaigns: u64,
}

fn main() {
    let args = Args::parse();
    for seed in args.seed..args.seed.saturating_add(args.campaigns) {
        let start = std::time::Instant::now();
        match minion_dnsd::fuzz::run(seed, args.iterations) {
            Ok(stats) => println!("seed {seed}: {stats} ({:.1?})", start.elapsed()),
            Err(finding) => {
                eprintln!("minion-dnsd fuzz: error: {finding}");
                std::process::exit(1);
            }
        }
    }
}
