"""What people read: the HTML report (``report``, its ``templates/``, ``svgplot``, ``diagplots``),
terminal output (``console``), the Jinja environment (``templating``), how episodes are named
(``seedpolicy``), strings made safe to show (``textsafe``) and safe writing into folders (``fsutil``)."""
