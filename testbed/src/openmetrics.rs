//! /metrics parsed by a real OpenMetrics parser: the Prometheus Python client's strict one
//! (`prometheus_client.openmetrics.parser`, Debian's `python3-prometheus-client`), run as a
//! subprocess that prints the families as JSON.

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

/// Parses the exposition and prints `[{name, type, unit, help, samples: [{name, labels,
/// value}]}]`; non-finite values as strings (`inf`, `nan`), which JSON has no numbers for.
const PARSER: &str = r#"
import json, math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
def number(v):
    v = float(v)
    return v if math.isfinite(v) else repr(v)
families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name, "type": f.type, "unit": f.unit, "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": number(s.value)}
                    for s in f.samples],
    })
json.dump(families, sys.stdout)
"#;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name: the family's, or with `_total`, `_bucket`, `_count`… appended.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One metric family.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The family name (without `_total` for counters).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `unknown`…
    pub kind: String,
    pub unit: String,
    pub help: String,
    pub samples: Vec<Sample>,
}

impl Family {
    /// The samples whose labels include every `(name, value)` of `labels`.
    pub fn matching<'a>(
        &'a self,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples
            .iter()
            .filter(move |s| labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub families: Vec<Family>,
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The family, which must exist.
    pub fn expect(&self, name: &str) -> &Family {
        self.family(name).unwrap_or_else(|| {
            let names: Vec<&str> = self.families.iter().map(|f| f.name.as_str()).collect();
            panic!("no metric family {name}; families: {names:?}")
        })
    }

    /// The value of the one sample named `sample` with these labels (among others), if any.
    pub fn value(&self, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self
            .families
            .iter()
            .flat_map(|f| f.samples.iter())
            .filter(|s| s.name == sample && labels.iter().all(|(k, v)| s.label(k) == Some(*v)));
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "several {sample} samples with labels {labels:?}"
        );
        Some(first.value)
    }
}

/// Parses `text` with the strict OpenMetrics parser; `Err` with the parser's message when it
/// rejects the text.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut child = Command::new(crate::spawn::python())
        .arg("-c")
        .arg(PARSER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running python3: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = text.to_owned();
    // Written from another thread: a large exposition must not deadlock against the output.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running python3: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "the OpenMetrics parser rejected the exposition ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let json: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the parser's output is not JSON: {e}"))?;
    let text_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let families = json
        .as_array()
        .ok_or("the parser's output is not an array")?
        .iter()
        .map(|f| Family {
            name: text_of(&f["name"]),
            kind: text_of(&f["type"]),
            unit: text_of(&f["unit"]),
            help: text_of(&f["help"]),
            samples: f["samples"]
                .as_array()
                .map(|samples| {
                    samples
                        .iter()
                        .map(|s| Sample {
                            name: text_of(&s["name"]),
                            labels: s["labels"]
                                .as_object()
                                .map(|o| o.iter().map(|(k, v)| (k.clone(), text_of(v))).collect())
                                .unwrap_or_default(),
                            value: match &s["value"] {
                                Value::String(special) => special.parse().unwrap_or(f64::NAN),
                                number => number.as_f64().unwrap_or(f64::NAN),
                            },
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    Ok(Exposition { families })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let text = "# TYPE a counter\n# HELP a An a.\na_total{x=\"1\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                    h_count 2\nh_sum 1.5\n# EOF\n";
        let e = parse(text).unwrap();
        assert_eq!(e.expect("a").kind, "counter");
        assert_eq!(e.value("a_total", &[("x", "1")]), Some(3.0));
        assert_eq!(e.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
        assert_eq!(e.expect("h").kind, "histogram");
        // No `# EOF`: not OpenMetrics.
        assert!(parse("# TYPE a counter\na_total 3\n").is_err());
    }
}
