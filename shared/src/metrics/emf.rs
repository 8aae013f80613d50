//! A `metrics` recorder that writes CloudWatch Embedded Metric Format (EMF) lines: what the
//! Lambda functions install, flushing after each invocation's response has been handed back
//! (`crate::lambda`).
//!
//! Every line is one JSON document in namespace `signalpost` with one dimension set,
//! `[["function"]]`; names drop the `signalpost_` prefix and the `_total` suffix. A metric's
//! labels (`route`, `status_class`, `op`, `kind`, `limit`) become top-level properties of
//! its line, one line per label set, so CloudWatch sums a metric over its labels per function
//! while Logs Insights can still break it down by them. Per flush:
//! - counters: the increase since the last flush (lines carry no zeros);
//! - gauges: the highest value since the last flush, so that a poll that ended before the
//!   flush still shows (on classic Lambda every flush follows the invocation's end);
//! - histograms: the values recorded since the last flush, at most 100 to a metric per line
//!   (the format's limit), further lines for the rest;
//! - at most 100 metrics per line.
//!
//! `metrics_cloudwatch_embedded` was considered: it makes every label a dimension (one
//! CloudWatch metric, and its cost, per route and status), keeps the request id as one
//! property shared by concurrent invocations, and drops histogram values past 100 between
//! flushes, which 1,000 concurrent polls on Managed Instances would exceed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ::metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "signalpost";
/// The one dimension.
pub const DIMENSION: &str = "function";
/// The format's limits: metrics per document, values per metric.
const MAX_METRICS: usize = 100;
const MAX_VALUES: usize = 100;

/// The recorder, and the handle that flushes it. Cheap to clone.
#[derive(Clone)]
pub struct Emf {
    inner: Arc<Inner>,
}

struct Inner {
    function: String,
    series: RwLock<HashMap<Key, Series>>,
    units: Mutex<HashMap<KeyName, Unit>>,
}

#[derive(Clone)]
enum Series {
    Counter(Arc<CounterCell>),
    Gauge(Arc<GaugeCell>),
    Histogram(Arc<HistogramCell>),
}

#[derive(Default)]
struct CounterCell(AtomicU64);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// A gauge's value and its highest value since the last flush, as `f64` bits.
#[derive(Default)]
struct GaugeCell {
    value: AtomicU64,
    peak: AtomicU64,
}

impl GaugeCell {
    fn update(&self, change: impl Fn(f64) -> f64) {
        let mut current = self.value.load(Ordering::Relaxed);
        let new = loop {
            let new = change(f64::from_bits(current));
            match self.value.compare_exchange_weak(
                current,
                new.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break new,
                Err(actual) => current = actual,
            }
        };
        let _ = self
            .peak
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |peak| {
                (new > f64::from_bits(peak)).then_some(new.to_bits())
            });
    }

    /// The highest value since the last call, which starts the next period at the current one.
    fn take_peak(&self) -> f64 {
        let current = self.value.load(Ordering::Relaxed);
        f64::from_bits(self.peak.swap(current, Ordering::Relaxed)).max(f64::from_bits(current))
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, value: f64) {
        self.update(|current| current + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|current| current - value);
    }

    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

#[derive(Default)]
struct HistogramCell(Mutex<Vec<f64>>);

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(value);
    }
}

/// A metric's labels, as `(key, value)` pairs.
type Labels = Vec<(String, String)>;

/// A metric's EMF name, CloudWatch unit and reading.
type Named<'a> = (String, Option<&'a str>, Reading);

/// One metric's share of a flush.
enum Reading {
    Scalar(Value),
    Values(Vec<f64>),
}

impl Emf {
    /// A recorder for the Lambda function `function` (the dimension's value).
    pub fn new(function: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                function: function.to_owned(),
                series: RwLock::default(),
                units: Mutex::default(),
            }),
        }
    }

    /// Installs a recorder for `function` as the process's global one and describes every
    /// metric; returns the handle to flush it with. `None` if a recorder was installed before.
    pub fn install(function: &str) -> Option<Self> {
        let emf = Self::new(function);
        ::metrics::set_global_recorder(emf.clone()).ok()?;
        super::describe();
        Some(emf)
    }

    fn series(&self, key: &Key, make: impl FnOnce() -> Series) -> Series {
        if let Some(series) = self
            .inner
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return series.clone();
        }
        self.inner
            .series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(make)
            .clone()
    }

    /// Writes what was recorded since the last flush to stdout, in one write so that
    /// concurrent invocations' lines never interleave.
    pub fn flush_to_stdout(&self) {
        let mut lines = Vec::new();
        self.flush(&mut lines, crate::clock::now_millis());
        if !lines.is_empty() {
            let _ = std::io::stdout().lock().write_all(&lines);
        }
    }

    /// Writes what was recorded since the last flush as EMF lines stamped `timestamp` (Unix ms).
    pub fn flush(&self, out: &mut Vec<u8>, timestamp: i64) {
        let units = self
            .inner
            .units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Label set → (metric name, unit, reading), in a stable order.
        let mut groups: BTreeMap<Labels, Vec<Named<'_>>> = BTreeMap::new();
        for (key, series) in self
            .inner
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let reading = match series {
                Series::Counter(cell) => match cell.0.swap(0, Ordering::Relaxed) {
                    0 => continue,
                    delta => Reading::Scalar(delta.into()),
                },
                Series::Gauge(cell) => Reading::Scalar(json!(cell.take_peak())),
                Series::Histogram(cell) => {
                    let values =
                        std::mem::take(&mut *cell.0.lock().unwrap_or_else(PoisonError::into_inner));
                    if values.is_empty() {
                        continue;
                    }
                    Reading::Values(values)
                }
            };
            let labels = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            let unit = units
                .get(&KeyName::from(key.name().to_owned()))
                .and_then(|unit| cloudwatch_unit(*unit));
            groups
                .entry(labels)
                .or_default()
                .push((emf_name(key.name()), unit, reading));
        }
        for (labels, mut readings) in groups {
            readings.sort_by(|a, b| a.0.cmp(&b.0));
            // Round 0 carries every scalar and the first values of each histogram; later
            // rounds the histograms' further values.
            let mut offset = 0;
            loop {
                let round: Vec<(&str, Option<&str>, Value)> = readings
                    .iter()
                    .filter_map(|(name, unit, reading)| {
                        let value = match reading {
                            Reading::Scalar(value) if offset == 0 => value.clone(),
                            Reading::Scalar(_) => return None,
                            Reading::Values(values) if values.len() > offset => {
                                json!(values[offset..values.len().min(offset + MAX_VALUES)])
                            }
                            Reading::Values(_) => return None,
                        };
                        Some((name.as_str(), *unit, value))
                    })
                    .collect();
                if round.is_empty() {
                    break;
                }
                for chunk in round.chunks(MAX_METRICS) {
                    self.write_document(out, timestamp, &labels, chunk);
                }
                offset += MAX_VALUES;
            }
        }
    }

    fn write_document(
        &self,
        out: &mut Vec<u8>,
        timestamp: i64,
        labels: &[(String, String)],
        metrics: &[(&str, Option<&str>, Value)],
    ) {
        let definitions: Vec<Value> = metrics
            .iter()
            .map(|(name, unit, _)| match unit {
                Some(unit) => json!({"Name": name, "Unit": unit}),
                None => json!({"Name": name}),
            })
            .collect();
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [[DIMENSION]],
                    "Metrics": definitions,
                }],
            }),
        );
        document.insert(DIMENSION.into(), self.inner.function.clone().into());
        for (key, value) in labels {
            document.insert(key.clone(), value.clone().into());
        }
        for (name, _, value) in metrics {
            document.insert((*name).to_owned(), value.clone());
        }
        if serde_json::to_writer(&mut *out, &Value::Object(document)).is_ok() {
            out.push(b'\n');
        }
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit {
            self.inner
                .units
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, unit);
        }
    }
}

impl Recorder for Emf {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.series(key, || Series::Counter(Arc::default())) {
            Series::Counter(cell) => Counter::from_arc(cell),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.series(key, || Series::Gauge(Arc::default())) {
            Series::Gauge(cell) => Gauge::from_arc(cell),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.series(key, || Series::Histogram(Arc::default())) {
            Series::Histogram(cell) => Histogram::from_arc(cell),
            _ => Histogram::noop(),
        }
    }
}

/// `signalpost_wakeup_errors_total` → `wakeup_errors`.
pub fn emf_name(name: &str) -> String {
    let name = name.strip_prefix("signalpost_").unwrap_or(name);
    name.strip_suffix("_total").unwrap_or(name).to_owned()
}

fn cloudwatch_unit(unit: Unit) -> Option<&'static str> {
    match unit {
        Unit::Count => Some("Count"),
        Unit::Seconds => Some("Seconds"),
        Unit::Milliseconds => Some("Milliseconds"),
        Unit::Bytes => Some("Bytes"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::metrics::with_local_recorder;

    fn lines(emf: &Emf) -> Vec<Value> {
        let mut out = Vec::new();
        emf.flush(&mut out, 1_700_000_000_000);
        String::from_utf8(out)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
            .collect()
    }

    #[test]
    fn writes_deltas_with_the_function_dimension_and_labels_as_properties() {
        let emf = Emf::new("post");
        with_local_recorder(&emf, || {
            super::super::describe();
            super::super::messages_posted(3);
            super::super::request("POST /v1/rooms/:room/messages", 202);
            super::super::request("POST /v1/rooms/:room/messages", 202);
            super::super::request("POST /v1/rooms/:room/messages", 503);
        });
        let documents = lines(&emf);
        assert_eq!(documents.len(), 3, "{documents:?}");
        let unlabelled = documents
            .iter()
            .find(|document| document.get("route").is_none())
            .expect("the unlabelled metrics");
        assert_eq!(
            unlabelled["_aws"],
            json!({"Timestamp": 1_700_000_000_000_i64, "CloudWatchMetrics": [{
                "Namespace": "signalpost", "Dimensions": [["function"]],
                "Metrics": [{"Name": "messages_posted", "Unit": "Count"}]}]})
        );
        assert_eq!(unlabelled["function"], "post");
        assert_eq!(unlabelled["messages_posted"], 3);
        let ok = documents
            .iter()
            .find(|document| document["status_class"] == "2xx")
            .expect("the 2xx line");
        assert_eq!(ok["requests"], 2);
        assert_eq!(ok["route"], "POST /v1/rooms/:room/messages");
        // A second flush carries only what happened since.
        assert!(lines(&emf).is_empty());
    }

    #[test]
    fn gauges_report_their_peak_and_histograms_split_at_100_values() {
        let emf = Emf::new("poll");
        with_local_recorder(&emf, || {
            let first = super::super::WaitingPoll::start();
            let second = super::super::WaitingPoll::start();
            drop((first, second));
            super::super::messages_delivered((0..250).map(|_| 1_000), 1_500);
        });
        let documents = lines(&emf);
        let values: Vec<usize> = documents
            .iter()
            .filter_map(|document| document["delivery_latency_seconds"].as_array())
            .map(Vec::len)
            .collect();
        assert_eq!(values, [100, 100, 50]);
        assert!(documents.iter().all(|document| {
            document["delivery_latency_seconds"]
                .as_array()
                .is_none_or(|values| values.iter().all(|value| value == 0.5))
        }));
        let peaks: Vec<&Value> = documents
            .iter()
            .filter_map(|document| document.get("waiting_polls"))
            .collect();
        assert_eq!(peaks, [&json!(2.0)], "the peak, though both polls ended");
        assert_eq!(
            lines(&emf)
                .iter()
                .map(|document| document["waiting_polls"].clone())
                .collect::<Vec<_>>(),
            [json!(0.0)],
            "then the value now"
        );
    }

    #[test]
    fn at_most_100_metrics_per_line() {
        let emf = Emf::new("join");
        with_local_recorder(&emf, || {
            for index in 0..150 {
                ::metrics::counter!(format!("signalpost_m{index}_total")).increment(1);
            }
        });
        let documents = lines(&emf);
        assert_eq!(documents.len(), 2);
        for document in &documents {
            let metrics = document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .expect("metrics");
            assert!(metrics.len() <= 100);
            for metric in metrics {
                let name = metric["Name"].as_str().expect("name");
                assert_eq!(document[name], 1, "{name} has its value");
            }
        }
    }

    #[test]
    fn names_drop_the_prefix_and_the_total_suffix() {
        assert_eq!(emf_name("signalpost_wakeup_errors_total"), "wakeup_errors");
        assert_eq!(
            emf_name("signalpost_delivery_latency_seconds"),
            "delivery_latency_seconds"
        );
    }
}
