# A test agent (busybox sh) that counts in memory: the count lives in a shell variable and is
# only written out, never read back, so a count that continues after a resume proves the
# process's memory was kept (tests/integration/test_suspend_resume.py).
# - /agentos/count: the current count, every 0.1 s (the heartbeat file is touched too);
# - /agentos/starts: one line per fresh start of the process (a restore adds none);
# - /tmp/kept: written once in the sandbox's own root filesystem, to check files are kept.
[ -f /tmp/kept ] || echo "written before the suspend" > /tmp/kept
echo "start" >> /agentos/starts
i=0
while true; do
  i=$((i + 1))
  echo "$i" > /agentos/count.tmp && mv /agentos/count.tmp /agentos/count
  touch /agentos/heartbeat
  sleep 0.1
done
