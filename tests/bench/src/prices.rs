//! The price table of `bench cost`: AWS list prices in us-east-1, on-demand, arm64, without
//! free tiers or discounts. Every price the cost model uses lives here and only here, each
//! with the page it comes from; update the date when you check them again.

/// When these prices were last checked against their sources.
pub const CHECKED: &str = "2026-12-04";

/// The region the prices are for.
pub const REGION: &str = "us-east-1";

/// A price per unit, with its source.
pub struct Price {
    /// US dollars per `unit`.
    pub dollars: f64,
    pub unit: &'static str,
    pub source: &'static str,
}

/// Lambda (classic), arm64: duration per GB-second.
pub const LAMBDA_GB_SECOND: Price = Price {
    dollars: 0.000_013_333_4,
    unit: "GB-second (arm64)",
    source: "https://aws.amazon.com/lambda/pricing/ (Duration, Arm price, first 7.5 billion GB-s)",
};

/// Lambda requests, classic and Managed Instances alike.
pub const LAMBDA_REQUEST: Price = Price {
    dollars: 0.20 / 1e6,
    unit: "request",
    source: "https://aws.amazon.com/lambda/pricing/ ($0.20 per 1M requests; the same for Lambda Managed Instances)",
};

/// Lambda Managed Instances: the management fee, as a share of the instance's EC2 price.
pub const MANAGED_INSTANCES_FEE: f64 = 0.15;
/// Where [`MANAGED_INSTANCES_FEE`] comes from.
pub const MANAGED_INSTANCES_FEE_SOURCE: &str = "https://aws.amazon.com/lambda/pricing/ (Lambda Managed Instances: EC2 on-demand price plus a 15 % management fee)";

/// The instance type the Managed Instances figures assume: the smallest Graviton general
/// purpose type that gives a 2 GiB, 1 vCPU execution environment room beside the platform's
/// own agents. The cost model packs one environment per instance, which is conservative.
pub const INSTANCE_TYPE: &str = "m7g.large (2 vCPU, 8 GiB)";
/// EC2 on-demand, Linux, [`INSTANCE_TYPE`].
pub const INSTANCE_HOUR: Price = Price {
    dollars: 0.0816,
    unit: "instance-hour",
    source: "https://aws.amazon.com/ec2/pricing/on-demand/ (m7g.large, Linux; $0.0816/h also quoted by factualminds.com's June 2026 EC2 price survey)",
};

/// API Gateway HTTP API requests (first 300 million a month; every 512 KB counts as one).
pub const HTTP_API_REQUEST: Price = Price {
    dollars: 1.00 / 1e6,
    unit: "request",
    source: "https://aws.amazon.com/api-gateway/pricing/ (HTTP APIs, first 300 million)",
};

/// DynamoDB on-demand write request units (1 KB per unit; transactional writes take two).
pub const DYNAMODB_WRITE_UNIT: Price = Price {
    dollars: 0.625 / 1e6,
    unit: "write request unit",
    source: "https://aws.amazon.com/dynamodb/pricing/on-demand/ (Standard table class)",
};

/// DynamoDB on-demand read request units (a strongly consistent read of up to 4 KB is one).
pub const DYNAMODB_READ_UNIT: Price = Price {
    dollars: 0.125 / 1e6,
    unit: "read request unit",
    source: "https://aws.amazon.com/dynamodb/pricing/on-demand/ (Standard table class)",
};

/// SQS standard queue requests (every 64 KB chunk of a payload counts as one).
pub const SQS_REQUEST: Price = Price {
    dollars: 0.40 / 1e6,
    unit: "request",
    source: "https://aws.amazon.com/sqs/pricing/ (Standard queues, after the first million)",
};

/// Hours in the month the monthly figures use (AWS's own calculator uses 730).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Every price, for printing the table with its sources.
pub fn table() -> Vec<(&'static str, &'static Price)> {
    vec![
        ("Lambda duration (classic)", &LAMBDA_GB_SECOND),
        ("Lambda requests", &LAMBDA_REQUEST),
        ("EC2 instance (Managed Instances)", &INSTANCE_HOUR),
        ("HTTP API requests", &HTTP_API_REQUEST),
        ("DynamoDB writes", &DYNAMODB_WRITE_UNIT),
        ("DynamoDB reads", &DYNAMODB_READ_UNIT),
        ("SQS requests", &SQS_REQUEST),
    ]
}
