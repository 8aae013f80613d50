//! Setting up the table: creating it with its keys, waiting for it to become active and
//! turning TTL on.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};

use super::items::{self, EXPIRES_AT, PK};
use super::{DynamoStore, built, unavailable, unavailable_because};
use crate::store::StoreError;

impl DynamoStore {
    /// Creates the table (on-demand capacity, the keys above), waits until it is active and
    /// turns TTL on for `expiresAt`. Does nothing that is already done.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attribute = |name: &str| {
            built(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )
        };
        let key_element = |name: &str, kind: KeyType| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build(),
            )
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(PK)?)
            .attribute_definitions(attribute(items::SK)?)
            .key_schema(key_element(PK, KeyType::Hash)?)
            .key_schema(key_element(items::SK, KeyType::Range)?)
            .send()
            .await;
        if let Err(error) = created {
            let exists = error
                .as_service_error()
                .is_some_and(|error| error.is_resource_in_use_exception());
            if !exists {
                return Err(unavailable(error));
            }
        }
        let mut active = false;
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(unavailable)?;
            if described.table().and_then(|table| table.table_status())
                == Some(&TableStatus::Active)
            {
                active = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !active {
            return Err(unavailable_because(
                "the table did not become active in 60 s",
            ));
        }
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        let status = ttl
            .time_to_live_description()
            .and_then(|description| description.time_to_live_status());
        if !matches!(
            status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) {
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(built(
                    TimeToLiveSpecification::builder()
                        .attribute_name(EXPIRES_AT)
                        .enabled(true)
                        .build(),
                )?)
                .send()
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
