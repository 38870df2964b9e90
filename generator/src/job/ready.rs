//! `await-ready`'s decision: are the servers ready, still coming up, or did one end unready?

use super::model::RankSummary;

/// Where the listed roles stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Some rank-0 summary is missing, unreadable or not ready yet.
    Waiting,
    /// Every role's rank 0 is ready; the latest of their ready times.
    Ready(i64),
    /// This role's rank 0 ended without having been ready.
    NeverReady(String),
}

/// Decides from each role's rank-0 summary (`None`: missing or half-written, for now).
pub fn readiness(ranks: &[(&str, Option<&RankSummary>)]) -> Readiness {
    let mut latest = i64::MIN;
    let mut waiting = false;
    for (role, summary) in ranks {
        match summary {
            Some(summary) => match summary.ready_unix_us {
                Some(ready) => latest = latest.max(ready),
                None if ended(summary) => return Readiness::NeverReady((*role).to_owned()),
                None => waiting = true,
            },
            None => waiting = true,
        }
    }
    if waiting || ranks.is_empty() {
        Readiness::Waiting
    } else {
        Readiness::Ready(latest)
    }
}

fn ended(summary: &RankSummary) -> bool {
    summary.exit_code.is_some()
        || summary.ended_unix_us.is_some()
        || summary.phase.as_deref() == Some("ended")
}

/// The line `await-ready` appends to `phases.jsonl`.
pub fn servers_ready_line(unix_us: i64) -> String {
    format!("{{\"phase\":\"servers_ready\",\"unix_us\":{unix_us}}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ranks<'a> = Vec<(&'a str, Option<&'a RankSummary>)>;

    fn summary(ready: Option<i64>, exit: Option<i64>, phase: &str) -> RankSummary {
        RankSummary {
            ready_unix_us: ready,
            exit_code: exit,
            phase: Some(phase.to_owned()),
            ..RankSummary::default()
        }
    }

    #[test]
    fn readiness_table() {
        let ready_5 = summary(Some(5), None, "serving");
        let ready_9 = summary(Some(9), None, "serving");
        let starting = summary(None, None, "starting");
        let dead = summary(None, Some(75), "ended");
        let ended_phase = summary(None, None, "ended");
        let cases: Vec<(Ranks<'_>, Readiness)> = vec![
            (vec![], Readiness::Waiting),
            (vec![("GEN_0", None)], Readiness::Waiting),
            (vec![("GEN_0", Some(&starting))], Readiness::Waiting),
            (
                vec![("GEN_0", Some(&ready_5)), ("CTX_0", Some(&ready_9))],
                Readiness::Ready(9),
            ),
            (
                vec![("GEN_0", Some(&ready_5)), ("CTX_0", None)],
                Readiness::Waiting,
            ),
            (
                vec![("GEN_0", None), ("CTX_0", Some(&dead))],
                Readiness::NeverReady("CTX_0".into()),
            ),
            (
                vec![("GEN_0", Some(&ended_phase))],
                Readiness::NeverReady("GEN_0".into()),
            ),
        ];
        for (ranks, want) in cases {
            assert_eq!(readiness(&ranks), want, "{ranks:?}");
        }
    }

    #[test]
    fn the_line() {
        assert_eq!(
            servers_ready_line(12),
            "{\"phase\":\"servers_ready\",\"unix_us\":12}\n"
        );
        let value: serde_json::Value =
            serde_json::from_str(servers_ready_line(3).trim()).expect("JSON");
        assert_eq!(value["phase"], "servers_ready");
    }
}
