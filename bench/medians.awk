# Median msg/s and µs/msg of one program's runs, for bench/ab.sh and
# bench/loadgen.sh: each run is a line whose 3rd field is the program's
# name, field `rate_col` its msg/s and field `us_col` its µs/msg ("-" when
# unknown, sorted last). The median is the middle run, or the mean of the
# two middle ones. With `user_col` and `kernel_col` (bench/ab.sh), the
# medians of the user-space and kernel parts of the µs/msg too, each taken
# on its own (so they need not add up to the total's median).
#
# usage: awk -v name=NAME -v rate_col=N -v us_col=N [-v label="us/msg"]
#            [-v user_col=N -v kernel_col=N] [-v width=N] -f bench/medians.awk RESULTS
BEGIN { n = 0; if (label == "") label = "us/msg" }
function num(v) { return v == "-" ? 1e18 : v }
$3 == name {
    rate[n] = $rate_col; us[n] = num($us_col)
    if (user_col) { user[n] = num($user_col); kernel[n] = num($kernel_col) }
    n++
}
function median(a, n,    i, j, t) {
    for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n - 1) / 2] : (a[n / 2 - 1] + a[n / 2]) / 2
}
END {
    if (!n) exit
    printf "  %s  msg/s %d  %s %.2f", sprintf("%-" width + 0 "s", name), median(rate, n), label, median(us, n)
    if (user_col) printf "  user %.3f  kernel %.3f", median(user, n), median(kernel, n)
    printf "\n"
}
