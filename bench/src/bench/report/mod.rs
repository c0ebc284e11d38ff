//! The benchmark's report: [`tables`] (one builder per table, and the table itself),
//! [`targets`] (the targets against the figures) and [`markdown`] (the whole report as
//! text for stdout and Markdown for BENCHMARKS.md).

mod markdown;
mod tables;
mod targets;

pub use markdown::{BENCHMARKS_HEADER, container_sweep, markdown, text};
pub use tables::{peer_line, run_line, threads_line};
