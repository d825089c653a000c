# Sourced by the end-to-end scripts: questions to a node's status report. The caller sets `bin`
# (the ipns-registry binary) and `work` (the directory holding each node's data directory).
#
# status_eval NODE EXPR: evaluates the python expression EXPR on the status report `s` of the
# node whose data directory is $work/NODE, and prints it (booleans as yes/no); prints nothing if
# the node does not answer.
status_eval() {
  "$bin" --data-dir "$work/$1" status --json 2>/dev/null | python3 -c "import json,sys
try:
    s = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
r = $2
print(r if not isinstance(r, bool) else ('yes' if r else 'no'))" 2>/dev/null || true
}

# status_is NODE EXPR VALUE: whether `status_eval NODE EXPR` prints VALUE now.
status_is() { [ "$(status_eval "$1" "$2")" = "$3" ]; }
