# gnuplot bench/results/ws-64.gp: the WebSocket chart of docs/benchmarks.md
# from bench/results/ws-64.dat (medians of the two bench/ab runs in ws-ab.md).
set terminal pngcairo size 900,420 font ",10"
set output "bench/results/ws-64.png"
set multiplot layout 1,2 title "WebSocket echo, 64 B request/response, 16 connections, 1 event loop (two runs)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -20
set key top right
set grid ytics
set title "messages/s (higher is better)"
set yrange [0:*]
plot "bench/results/ws-64.dat" using 2:xtic(1) title "run 1", "" using 3 title "run 2"
set title "server CPU µs per message (lower is better)"
plot "bench/results/ws-64.dat" using 4:xtic(1) title "run 1", "" using 5 title "run 2"
unset multiplot
