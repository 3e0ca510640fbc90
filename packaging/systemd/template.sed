# Turns yaim.service into the template yaim@.service: one instance per cluster,
# configured by /etc/yaim/<instance>.yml. Both package builds run
#   sed -f packaging/systemd/template.sed packaging/systemd/yaim.service
# so the two units never differ in anything but these lines.
s|^Description=yaim:|Description=yaim (cluster %i):|
s|/etc/yaim/yaim\.yml|/etc/yaim/%i.yml|g
s|/var/log/yaim/yaim\.log|/var/log/yaim/%i.log|g
