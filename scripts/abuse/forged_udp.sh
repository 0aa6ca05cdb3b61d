#!/usr/bin/env bash
# The forged-nonce load of issue 22, rerunnable: after sniffing a round's
# id, an attacker sends 100 datagrams `PORTCALL <round> <forged nonce>`
# (~6 KB) to a UDP canary before the genuine probe arrives. Before nonces
# were keyed, they filled the canary's cap, the genuine nonce was dropped
# and the open path was reported `wrong-host`.
#
# Runs, TRIES times (default 20), on loopback only:
#   - udp_canary's `forged_nonces_neither_fill_the_cap_nor_get_answers`: a
#     UDP canary under the round's nonce key takes 100 forged datagrams
#     with the right round id from one socket, then the genuine nonce from
#     another; the genuine one must be recorded and answered, the forged
#     ones counted as strays (100), none dropped, none answered;
#   - the join's `a_full_canary_cap_is_overloaded_never_a_verdict`: a cap
#     full anyway makes the path an `error` ("overloaded: ..."), never
#     `wrong-host`;
#   - the item-10 check `no_answer_is_larger_than_a_line_without_a_valid_nonce`.
# Prints how many tries passed; exits 1 on any failure.
#
#   scripts/abuse/forged_udp.sh
#   TRIES=100 scripts/abuse/forged_udp.sh
set -euo pipefail

TRIES=${TRIES:-20}
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
filters=(
    forged_nonces_neither_fill_the_cap_nor_get_answers
    a_full_canary_cap_is_overloaded_never_a_verdict
    no_answer_is_larger_than_a_line_without_a_valid_nonce
)
# Build once; each try then runs the compiled tests only.
cargo test -q -p probe-core --lib --no-run 2>/dev/null
passed=0
for ((i = 1; i <= TRIES; i++)); do
    if out=$(cargo test -q -p probe-core --lib -- "${filters[@]}" 2>&1) &&
        grep -q "test result: ok. 3 passed" <<<"$out"; then
        passed=$((passed + 1))
    else
        echo "try $i failed:" >&2
        echo "$out" >&2
    fi
done
echo "forged UDP nonces (100 per try, then the genuine probe): $passed of $TRIES tries exact (genuine nonce recorded and answered, forged ones counted and ignored)"
(( passed == TRIES ))
