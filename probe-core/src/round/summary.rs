//! The line `check` prints when it was interrupted: which agents the round
//! was torn down on, and which it could not reach, so an operator knows
//! where something of the round may still run (until that agent's lease
//! lapses) instead of reading that everything was cleaned up.

use crate::report::{AgentOutcome, RoundEvidence};

/// "interrupted; the round was torn down on N agents[; could not reach
/// X, Y: ...]", from the outcomes [`super::run_round`] gave a cancelled
/// round's agents (the unreachable ones were not confirmed torn down, or
/// never answered at all).
pub fn interrupted_summary(evidence: &RoundEvidence) -> String {
    let mut down = 0usize;
    let mut unreached = Vec::new();
    for (host, agent) in &evidence.agents {
        match &agent.outcome {
            AgentOutcome::Unreachable(_) => unreached.push(host.as_str()),
            AgentOutcome::Up | AgentOutcome::Cancelled | AgentOutcome::PlanMismatch(_) => {
                down += 1;
            }
        }
    }
    let agents = |n: usize| if n == 1 { "agent" } else { "agents" };
    if unreached.is_empty() {
        return format!(
            "interrupted; the round was torn down on all {down} {}",
            agents(down)
        );
    }
    format!(
        "interrupted; the round was torn down on {down} {}; could not reach {}: anything prepared there closes when its lease lapses (seconds), at the latest at the round's TTL",
        agents(down),
        unreached.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::AgentEvidence;

    fn evidence(outcomes: &[(&str, AgentOutcome)]) -> RoundEvidence {
        RoundEvidence {
            started_at: std::time::UNIX_EPOCH,
            finished_at: std::time::UNIX_EPOCH,
            agents: outcomes
                .iter()
                .map(|(h, o)| {
                    let mut e = AgentEvidence::unreachable(String::new());
                    e.outcome = o.clone();
                    ((*h).to_string(), e)
                })
                .collect(),
        }
    }

    #[test]
    fn the_summary_names_the_hosts_it_could_not_reach() {
        let all = evidence(&[
            ("a", AgentOutcome::Cancelled),
            ("b", AgentOutcome::Cancelled),
        ]);
        assert_eq!(
            interrupted_summary(&all),
            "interrupted; the round was torn down on all 2 agents"
        );
        let some = evidence(&[
            ("a", AgentOutcome::Cancelled),
            ("quiet", AgentOutcome::Unreachable("timed out".into())),
            ("z", AgentOutcome::Unreachable("refused".into())),
        ]);
        let s = interrupted_summary(&some);
        assert!(
            s.starts_with(
                "interrupted; the round was torn down on 1 agent; could not reach quiet, z:"
            ),
            "{s}"
        );
    }
}
