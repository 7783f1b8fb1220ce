# SPDX-License-Identifier: Apache-2.0
"""The mmbroker dashboard (Streamlit multipage app).

Run with ``mmbroker ui`` (or next to the worker by ``mmbroker up``); settings
come from the ``MMBROKER_*`` environment like every broker process.
"""

from __future__ import annotations

import streamlit as st

from ui import shared
from ui.views.alert import alert_page
from ui.views.feed import feed_page
from ui.views.filters import filters_page
from ui.views.search import search_page
from ui.views.skymap import sky_page
from ui.views.subscribe import subscribe_page


def main() -> None:
    """Build the navigation and run the selected page."""
    st.set_page_config(page_title="mmbroker", page_icon=":material/satellite_alt:", layout="wide")
    pages = {
        "feed": st.Page(feed_page, title="Live feed", icon=":material/sensors:", url_path="feed", default=True),
        "sky": st.Page(sky_page, title="Sky map", icon=":material/public:", url_path="sky"),
        "alert": st.Page(alert_page, title="Alert", icon=":material/crisis_alert:", url_path="alert"),
        "filters": st.Page(filters_page, title="Filters", icon=":material/filter_alt:", url_path="filters"),
        "search": st.Page(search_page, title="Search", icon=":material/search:", url_path="search"),
        "subscribe": st.Page(subscribe_page, title="Subscribe", icon=":material/rss_feed:", url_path="subscribe"),
    }
    shared.register_pages(pages)
    nav = st.navigation(list(pages.values()))
    st.sidebar.caption(f"mmbroker dashboard · prefix `{shared.settings().prefix}` · times in UTC")
    nav.run()


if __name__ == "__main__":
    main()
