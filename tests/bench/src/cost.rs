//! `bench cost`: what a deployment costs, from measured request counts times the price table
//! of `prices.rs`. Run through `tests/with-moto.sh` (DynamoDB on a local moto server).
//!
//! Measured here, on the same set-up as `bench dynamo` (signalling instances on one DynamoDB
//! table, each with its own SQS wake-up queue, as Lambda execution environments): the HTTP
//! requests of a call set up and their durations, the DynamoDB requests and write units and
//! the SQS requests it costs; and what idle waiting peers cost per minute (polls, time held,
//! DynamoDB reads and write units, SQS requests), once with one poll per instance (classic
//! Lambda) and once with every poll in one instance (Managed Instances). Nothing about the
//! wake-up design is assumed: a change to the fallback reads or to the wake-ups shows up in
//! the measured counts when the command runs again.
//!
//! One modelled step: an execution environment has one SQS receive loop for all its polls,
//! so on Managed Instances the receives measured per instance-minute are divided among the
//! `--concurrency` polls an environment holds (environments assumed full; the monthly figures
//! count every running environment's receives instead).

use std::time::Duration;

use crate::deployment::Deployment;
use crate::dynamo::{self, ANSWER_BYTES, Idle, OFFER_BYTES, Tally};
use crate::prices::{self, Price};

/// What the deployment looks like, and how long to measure; every field is a command-line
/// option, and a setting the user can change.
#[derive(clap::Args)]
pub struct Settings {
    /// Memory of the poll function on classic Lambda, MB (the template's MemorySize).
    #[arg(long, default_value_t = 128.0)]
    pub poll_memory_mb: f64,
    /// Memory of the other functions on classic Lambda, MB.
    #[arg(long, default_value_t = 256.0)]
    pub other_memory_mb: f64,
    /// `wait` of the idle peers' polls (the server's maxWait), seconds.
    #[arg(long, default_value_t = 25)]
    pub wait: u64,
    /// Managed Instances: concurrent invocations per execution environment
    /// (tests/watch/concurrent_polls.py proves 1,000).
    #[arg(long, default_value_t = 1000.0)]
    pub concurrency: f64,
    /// Managed Instances: execution environments packed per instance.
    #[arg(long, default_value_t = 1.0)]
    pub environments_per_instance: f64,
    /// Managed Instances: instances kept running however few peers wait (AZ resilience).
    #[arg(long, default_value_t = 3.0)]
    pub minimum_instances: f64,
    /// Calls set up and measured.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Idle waiting peers measured.
    #[arg(long, default_value_t = 10)]
    pub idle_peers: usize,
    /// Seconds the idle peers are measured.
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    /// SQS wake-ups between instances (`false`: polls in other instances find messages by
    /// their fallback store reads, as before the wake-ups; no SQS requests).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wakeups: bool,
}

/// Per-item overhead of a message item beyond its data (keys, sender, type, expiry, id).
const ITEM_OVERHEAD_BYTES: usize = 300;

fn dollars(count: f64, price: &Price) -> f64 {
    count * price.dollars
}

/// What both modes pay for by the request: Lambda invocations (each behind one HTTP API
/// request), DynamoDB units and SQS requests.
struct Usage {
    requests: f64,
    read_units: f64,
    write_units: f64,
    sqs: f64,
}

impl Usage {
    fn cost(&self) -> f64 {
        dollars(self.requests, &prices::LAMBDA_REQUEST)
            + dollars(self.requests, &prices::HTTP_API_REQUEST)
            + dollars(self.read_units, &prices::DYNAMODB_READ_UNIT)
            + dollars(self.write_units, &prices::DYNAMODB_WRITE_UNIT)
            + dollars(self.sqs, &prices::SQS_REQUEST)
    }
}

/// One call set up: join → negotiation → leave, for two peers.
struct Call {
    usage: Usage,
    /// GB-seconds on classic Lambda.
    gb_seconds: f64,
    per_function: Vec<(&'static str, f64, Duration)>,
}

impl Call {
    fn classic(&self) -> f64 {
        self.usage.cost() + dollars(self.gb_seconds, &prices::LAMBDA_GB_SECOND)
    }
}

/// Extra units of the offer and the answer over the one unit per item the store counts:
/// a write unit per KB (posts are transactions: twice), a read unit per 4 KB.
fn sdp_surcharge() -> (f64, f64) {
    let (mut reads, mut writes) = (0, 0);
    for bytes in [OFFER_BYTES, ANSWER_BYTES] {
        let size = bytes + ITEM_OVERHEAD_BYTES;
        writes += 2 * (size.div_ceil(1024) - 1);
        reads += size.div_ceil(4096) - 1;
    }
    (reads as f64, writes as f64)
}

/// One waiting peer for one hour.
struct PeerHour {
    /// Classic Lambda: GB-seconds of the poll function.
    gb_seconds: f64,
    /// Classic Lambda: what it pays by the request, one poll per execution environment.
    classic: Usage,
    /// Managed Instances: the same without the SQS receives, which are per environment.
    managed: Usage,
    /// Managed Instances: SQS receives per execution environment-hour (its one receive loop).
    receives_per_environment: f64,
}

impl PeerHour {
    /// From idle peers measured one per instance (`classic`) and all in one instance
    /// (`managed`).
    fn from_idle(classic: &Idle, managed: &Idle, settings: &Settings) -> Self {
        let usage = |idle: &Idle, sqs: f64| Usage {
            requests: idle.polls * 60.0,
            // An idle read finds nothing: one unit each.
            read_units: idle.reads * 60.0,
            write_units: idle.write_units * 60.0,
            sqs: sqs * 60.0,
        };
        Self {
            gb_seconds: classic.held * 3600.0 * settings.poll_memory_mb / 1024.0,
            classic: usage(classic, classic.sqs),
            managed: usage(managed, managed.sqs - managed.sqs_receives),
            // Per peer-minute times the peers that shared the instance's one loop.
            receives_per_environment: managed.sqs_receives * 60.0 * settings.idle_peers as f64
                / managed.instances as f64,
        }
    }

    fn classic_compute(&self) -> f64 {
        dollars(self.gb_seconds, &prices::LAMBDA_GB_SECOND)
    }

    /// Managed Instances: a peer's share of its environment's receives, environments full.
    fn managed_receives(&self, settings: &Settings) -> f64 {
        dollars(
            self.receives_per_environment / settings.concurrency,
            &prices::SQS_REQUEST,
        )
    }

    /// Managed Instances: what a peer pays by the request.
    fn managed_requests(&self, settings: &Settings) -> f64 {
        self.managed.cost() + self.managed_receives(settings)
    }
}

/// One Managed Instances instance-hour, fee included.
fn instance_hour() -> f64 {
    prices::INSTANCE_HOUR.dollars * (1.0 + prices::MANAGED_INSTANCES_FEE)
}

fn managed_compute_per_peer_hour(settings: &Settings) -> f64 {
    instance_hour() / (settings.concurrency * settings.environments_per_instance)
}

/// Instances running for `peers` peers waiting at once.
fn instances_for(peers: f64, settings: &Settings) -> f64 {
    (peers / (settings.concurrency * settings.environments_per_instance))
        .ceil()
        .max(settings.minimum_instances)
}

fn money(value: f64) -> String {
    if value >= 100.0 {
        format!("${value:.0}")
    } else if value >= 0.01 {
        format!("${value:.2}")
    } else {
        format!("${value:.7}")
    }
}

/// Measures, prices and prints.
pub async fn run(settings: Settings) {
    // A call set up, `rounds` times.
    let deployment = Deployment::start(settings.wakeups).await;
    let tally = Tally::default();
    let before = deployment.counts();
    for _ in 0..settings.rounds {
        dynamo::negotiation(&deployment.posting, &deployment.polling, &tally).await;
    }
    let after = deployment.counts();
    let rounds = settings.rounds.max(1) as f64;
    let (read_surcharge, write_surcharge) = sdp_surcharge();
    let mut per_function: Vec<_> = tally
        .calls()
        .into_iter()
        .map(|(function, (count, time))| (function, count as f64 / rounds, time.div_f64(rounds)))
        .collect();
    per_function.sort_by_key(|(function, ..)| *function);
    let memory = |function: &str| {
        if function == "poll" {
            settings.poll_memory_mb
        } else {
            settings.other_memory_mb
        }
    };
    // Sends and receives: a queue is created once per execution environment, at its first
    // poll, not per call.
    let sqs = after.sqs.since(before.sqs);
    let call = Call {
        usage: Usage {
            requests: per_function.iter().map(|(_, count, _)| count).sum(),
            read_units: (after.dynamo.reads - before.dynamo.reads) as f64 / rounds + read_surcharge,
            write_units: dynamo::write_units(before.dynamo, after.dynamo) as f64 / rounds
                + write_surcharge,
            sqs: (sqs.send + sqs.receive) as f64 / rounds,
        },
        gb_seconds: per_function
            .iter()
            .map(|(function, _, time)| time.as_secs_f64() * memory(function) / 1024.0)
            .sum(),
        per_function,
    };

    // Idle waiting peers: one per instance, as classic Lambda runs them, then all in one
    // instance, as a Managed Instances environment holds them; fresh deployments, so that
    // the polls left open by one measurement do not count in the next.
    let classic = dynamo::idle(
        &Deployment::start(settings.wakeups).await,
        settings.idle_peers,
        settings.idle_peers,
        settings.idle_seconds,
        settings.wait,
    )
    .await;
    let managed = dynamo::idle(
        &Deployment::start(settings.wakeups).await,
        1,
        settings.idle_peers,
        settings.idle_seconds,
        settings.wait,
    )
    .await;
    let hour = PeerHour::from_idle(&classic, &managed, &settings);

    print_report(&settings, &call, [&classic, &managed], &hour);
}

fn print_report(settings: &Settings, call: &Call, idle: [&Idle; 2], hour: &PeerHour) {
    println!(
        "## Prices ({}, list prices checked {}, on-demand, arm64)\n",
        prices::REGION,
        prices::CHECKED
    );
    println!("| item | price | source |\n|---|---:|---|");
    for (name, price) in prices::table() {
        let shown = if price.dollars < 0.001 {
            format!("${:.4} per million {}s", price.dollars * 1e6, price.unit)
        } else {
            format!("${} per {}", price.dollars, price.unit)
        };
        println!("| {name} | {shown} | {} |", price.source);
    }
    println!(
        "| Managed Instances management fee | {:.0} % of the instance price | {} |\n",
        prices::MANAGED_INSTANCES_FEE * 100.0,
        prices::MANAGED_INSTANCES_FEE_SOURCE
    );

    println!(
        "## Measured (DynamoDB and SQS on moto, wake-ups {}, {} calls, {} idle peers for {} s)\n",
        if settings.wakeups { "on" } else { "off" },
        settings.rounds,
        settings.idle_peers,
        settings.idle_seconds
    );
    println!(
        "| per call set up (2 peers: join, offer {OFFER_BYTES} B, answer {ANSWER_BYTES} B, 20 candidates each way in 6 batches, leave) | figure |\n|---|---:|"
    );
    for (function, count, time) in &call.per_function {
        println!(
            "| {function}: requests, total seconds | {count:.1}, {:.2} s |",
            time.as_secs_f64()
        );
    }
    println!(
        "| DynamoDB read units (requests + SDP surcharge) | {:.1} |",
        call.usage.read_units
    );
    println!(
        "| DynamoDB write units (1 KB items, transactions double, SDP surcharge) | {:.1} |",
        call.usage.write_units
    );
    println!(
        "| SQS requests (sends and receives; a queue is created once per environment) | {:.1} |",
        call.usage.sqs
    );
    println!();
    println!(
        "| per idle waiting peer-minute (wait={} s) | one poll per instance (classic Lambda) | {} polls in one instance (Managed Instances) |\n|---|---:|---:|",
        settings.wait, settings.idle_peers
    );
    let row = |name: &str, figure: &dyn Fn(&Idle) -> String| {
        println!("| {name} | {} | {} |", figure(idle[0]), figure(idle[1]));
    };
    row("polls", &|idle| format!("{:.2}", idle.polls));
    row("share of the time a poll is held", &|idle| {
        format!("{:.3}", idle.held)
    });
    row("DynamoDB reads (read units)", &|idle| {
        format!("{:.2}", idle.reads)
    });
    row("DynamoDB write requests / write units", &|idle| {
        format!("{:.2} / {:.2}", idle.writes, idle.write_units)
    });
    row("SQS requests (of them receives)", &|idle| {
        format!("{:.2} ({:.2})", idle.sqs, idle.sqs_receives)
    });
    println!(
        "\nManaged Instances: one receive loop per execution environment serves all its polls: {:.1} receives per environment-hour, so {:.3} per peer-hour at {} polls per environment (environments assumed full).",
        hour.receives_per_environment,
        hour.receives_per_environment / settings.concurrency,
        settings.concurrency
    );
    if !settings.wakeups {
        println!("(Wake-ups off: polls in other instances wake by their store reads.)");
    }
    println!();

    let managed_compute = managed_compute_per_peer_hour(settings);
    let classic_hour = hour.classic_compute() + hour.classic.cost();
    let managed_hour = managed_compute + hour.managed_requests(settings);
    println!(
        "## Costs\n\nClassic Lambda: poll {} MB, other functions {} MB. Managed Instances: {}, {} concurrent invocations per execution environment, {} environment(s) per instance, at least {} instances (AZ resilience), fee included.\n",
        settings.poll_memory_mb,
        settings.other_memory_mb,
        prices::INSTANCE_TYPE,
        settings.concurrency,
        settings.environments_per_instance,
        settings.minimum_instances
    );
    println!("| figure | classic Lambda | Managed Instances |\n|---|---:|---:|");
    println!(
        "| $ per call set up | {} | {} (instance time is paid by the hour) |",
        money(call.classic()),
        money(call.usage.cost())
    );
    println!(
        "| $ per waiting peer-hour: compute | {} | {} |",
        money(hour.classic_compute()),
        money(managed_compute)
    );
    let parts = |usage: &Usage, receives: f64| {
        [
            (
                "Lambda requests",
                dollars(usage.requests, &prices::LAMBDA_REQUEST),
            ),
            (
                "HTTP API requests",
                dollars(usage.requests, &prices::HTTP_API_REQUEST),
            ),
            (
                "DynamoDB reads",
                dollars(usage.read_units, &prices::DYNAMODB_READ_UNIT),
            ),
            (
                "DynamoDB writes",
                dollars(usage.write_units, &prices::DYNAMODB_WRITE_UNIT),
            ),
            ("SQS", dollars(usage.sqs, &prices::SQS_REQUEST) + receives),
        ]
    };
    let (classic_parts, managed_parts) = (
        parts(&hour.classic, 0.0),
        parts(&hour.managed, hour.managed_receives(settings)),
    );
    for ((name, classic), (_, managed)) in classic_parts.iter().zip(managed_parts.iter()) {
        println!(
            "| $ per waiting peer-hour: {name} | {} | {} |",
            money(*classic),
            money(*managed)
        );
    }
    println!(
        "| $ per waiting peer-hour: total | {} | {} |",
        money(classic_hour),
        money(managed_hour)
    );
    for peers in [100.0, 1_000.0, 10_000.0] {
        let classic = peers * classic_hour * prices::HOURS_PER_MONTH;
        let instances = instances_for(peers, settings);
        // Every running environment's receive loop, full or not.
        let receives = dollars(
            instances * settings.environments_per_instance * hour.receives_per_environment,
            &prices::SQS_REQUEST,
        );
        let managed = (instances * instance_hour() + peers * hour.managed.cost() + receives)
            * prices::HOURS_PER_MONTH;
        println!(
            "| $ per month, {peers:.0} peers waiting around the clock | {} | {} ({instances:.0} instances) |",
            money(classic),
            money(managed),
        );
    }
    let floor = settings.minimum_instances * instance_hour();
    let floor_receives = dollars(
        settings.minimum_instances
            * settings.environments_per_instance
            * hour.receives_per_environment,
        &prices::SQS_REQUEST,
    );
    let break_even = ((floor + floor_receives)
        / (classic_hour - hour.managed.cost()).max(f64::MIN_POSITIVE))
    .ceil();
    println!(
        "\nBreak-even: from {break_even:.0} peers waiting around the clock, Managed Instances cost less than classic Lambda (its {} instances cost {} a month however few peers wait).",
        settings.minimum_instances,
        money(floor * prices::HOURS_PER_MONTH)
    );
    println!(
        "Waiting peer-hour, Managed Instances / classic: compute {:.4} (1/{:.0}), total {:.4} (1/{:.1}); target ≤ 1/20.",
        managed_compute / hour.classic_compute(),
        hour.classic_compute() / managed_compute,
        managed_hour / classic_hour,
        classic_hour / managed_hour
    );
}
