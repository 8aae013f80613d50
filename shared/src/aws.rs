//! The HTTPS client of every AWS SDK client here (DynamoDB, and Secrets Manager in the Lambda
//! functions): rustls on *ring*.
//!
//! The SDK's default HTTPS client brings rustls on aws-lc, a second cryptography library next
//! to the *ring* that token signing (jsonwebtoken) already links. Choosing *ring* here keeps
//! one of them, which keeps each Lambda function's `bootstrap` under 8 MB (README: "Function
//! sizes"). The workspace turns the SDK's `default-https-client` feature off, so a client
//! built without this has no HTTP client and fails at its first request.

use aws_config::ConfigLoader;
use aws_smithy_http_client::Builder;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// `loader` with the HTTPS client all our AWS clients use.
pub fn with_https_client(loader: ConfigLoader) -> ConfigLoader {
    loader.http_client(
        Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https(),
    )
}
