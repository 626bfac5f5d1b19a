#!/usr/bin/env bash
# Proves, end to end, what issue 10 promised a learner and a teacher:
#   1. a learner's edit to lessons/NN/src survives `cargo xtask sync` (refused, named) and the proofs of
#      `cargo xtask test` (they build under target/);
#   2. `#[ignore]` on the tests of a learner's copy cannot make a lesson solved (the canonical tests run);
#   3. `std::process::exit(0)` or a hang in the code under test cannot make a test pass;
#   4. a test failing for a reason other than the exercise's todo!() (here: no Redis) fails the unsolved proof.
# Lesson 01 is edited in place and restored however the script ends. Needs the embedded broker only (and
# nothing listening on 127.0.0.1:1).
#
#   scripts/check-grading-safety.sh
set -euo pipefail
cd "$(dirname "$0")/.."

lesson=lessons/01-first-event
saved="$(mktemp -d)"
cp -a "$lesson/." "$saved/"
restore() { rm -rf "$lesson"; mkdir -p "$lesson"; cp -a "$saved/." "$lesson/"; rm -rf "$saved"; }
trap restore EXIT

out="$(mktemp)"
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; tail -30 "$out" >&2; exit 1; }
# Runs a command, keeping its output in $out; returns its status without tripping `set -e`.
run() { set +e; "$@" >"$out" 2>&1; local status=$?; set -e; return $status; }

step "1. a learner's edit survives sync and the proofs"
echo "// my notes: the key is the user id" >>"$lesson/src/lib.rs"
before="$(sha256sum "$lesson/src/lib.rs")"
if run cargo xtask sync; then fail "sync overwrote or accepted a changed lesson"; fi
grep -q "lessons/01-first-event: src/lib.rs" "$out" || fail "sync did not name the changed file"
[ "$(sha256sum "$lesson/src/lib.rs")" = "$before" ] || fail "sync changed lessons/01/src/lib.rs"
run cargo xtask test --lesson 01 --proofs-only --skip-lazy || fail "the proofs of lesson 01 failed"
[ "$(sha256sum "$lesson/src/lib.rs")" = "$before" ] || fail "cargo xtask test changed lessons/01/src/lib.rs"
echo "ok: sync refused and named src/lib.rs; the proofs passed; the edit is intact"

step "2. #[ignore] in the learner's tests cannot make an unsolved lesson solved"
cp -a "$saved/src/." "$lesson/src/"
sed -i -e 's/^#\[test\]/#[ignore]\n#[test]/' -e 's/^#\[tokio::test\]/#[ignore]\n#[tokio::test]/' "$lesson"/tests/*.rs
grep -q '#\[ignore\]' "$lesson"/tests/*.rs || fail "the test file was not edited"
if run cargo xtask check 01; then fail "check 01 passed with every test ignored"; fi
canonical="$(cat solutions/01-first-event/tests/*.rs | grep -cE '^#\[(tokio::)?test')"
grep -q "0/$canonical tests pass" "$out" || fail "check 01 did not grade all $canonical canonical tests"
echo "ok: every canonical test ran and failed"

step "3a. a solved lesson grades solved (the control)"
sed 's/solution_01/lesson_01/g' solutions/01-first-event/src/lib.rs >"$lesson/src/lib.rs"
run cargo xtask check 01 || fail "the solved lesson does not grade solved"
echo "ok: solved"

step "3b. std::process::exit(0) in the code under test cannot pass"
sed -i '/^pub async fn send_event(/a\    std::process::exit(0);' "$lesson/src/lib.rs"
if run cargo xtask check 01; then fail "exit(0) passed"; fi
grep -q "exited with status 0 before libtest reported it passed" "$out" || fail "no word of the early exit"
echo "ok: the test that exits early fails"

step "3c. a hang cannot pass, and costs one time limit"
sed 's/solution_01/lesson_01/g' solutions/01-first-event/src/lib.rs >"$lesson/src/lib.rs"
sed -i '/^pub async fn send_event(/a\    loop { std::thread::sleep(std::time::Duration::from_secs(1)); }' "$lesson/src/lib.rs"
if run cargo xtask check 01 --test-timeout 10; then fail "a hang passed"; fi
grep -q "timed out after 10 s" "$out" || fail "no word of the time limit"
echo "ok: the hanging test is killed after 10 s and fails"

step "4. a failure that is not the todo!() fails the unsolved proof (lesson 07 without Redis)"
if REDIS_URL=redis://127.0.0.1:1 run cargo xtask test --lesson 07 --proofs-only --skip-lazy; then
  fail "lesson 07's proofs passed without Redis"
fi
grep -q "fails, but not at the exercise's todo!()" "$out" || fail "the unsolved proof did not name the cause"
echo "ok: the unsolved proof fails and says why"

printf '\nall grading-safety checks passed\n'
