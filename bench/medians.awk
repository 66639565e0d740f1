# Median msg/s and µs/msg of one program's runs, for bench/ab.sh and
# bench/loadgen.sh: each run is a line whose 3rd field is the program's
# name, field `rate_col` its msg/s and field `us_col` its µs/msg ("-" when
# unknown, sorted last). The median is the middle run, or the mean of the
# two middle ones.
#
# usage: awk -v name=NAME -v rate_col=N -v us_col=N [-v label="us/msg"]
#            [-v width=N] -f bench/medians.awk RESULTS
BEGIN { n = 0; if (label == "") label = "us/msg" }
$3 == name { rate[n] = $rate_col; us[n] = ($us_col == "-" ? 1e18 : $us_col); n++ }
function median(a, n,    i, j, t) {
    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2
}
END { if (n) printf "  %s  msg/s %d  %s %.2f\n", sprintf("%-" width + 0 "s", name), median(rate, n), label, median(us, n) }
