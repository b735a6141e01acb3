"""Drives the operator's views of the web console in a real browser (Debian's chromium).

Usage: console_views_check.py BASE_URL ADMIN_SECRET RUNNING_ID SHOTS_DIR

Conversations filtered (the URL keeps the filter) and paged; a running turn cancelled from its
thread; a missing thread; dead letters retried as a selection, with the nav's count; the config
with its peers and no secret. Saves a screenshot of each view. Each step prints a line; the first
failure raises.
"""
import pathlib
import sys
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browser import chromium

BASE, SECRET, RUNNING, SHOTS = sys.argv[1], sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
SHOTS.mkdir(parents=True, exist_ok=True)

driver = chromium(height=1000)
wait = WebDriverWait(driver, 30)
js = driver.execute_script


def rows():
    return js("return [...document.querySelectorAll('#threads tr.thread')].map(r => r.dataset.thread)")


def shot(name):
    time.sleep(0.4)
    driver.save_screenshot(str(SHOTS / name))


try:
    driver.get(BASE + "/console")
    wait.until(EC.presence_of_element_located((By.ID, "secret"))).send_keys(SECRET)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#threads tr.thread")))

    # Paging: a full first page offers older ones, and they are others.
    first = rows()
    older = wait.until(EC.presence_of_element_located((By.ID, "older")))
    js("document.getElementById('older').click()")
    wait.until(lambda d: "before=" in d.current_url and rows() and rows() != first)
    assert not set(rows()) & set(first), (rows(), first)
    print("paged to older conversations by cursor")

    # A filter from the form: the server answers, and the URL keeps it.
    driver.get(BASE + "/console#threads")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#filters select[name=state]")))
    js("document.querySelector('#filters select[name=state]').value = 'failed';"
       "document.querySelector('#filters input[name=q]').value = 'broken';"
       "document.querySelector('#filters button[type=submit]').click()")
    wait.until(lambda d: "state=failed" in d.current_url)
    wait.until(lambda d: len(rows()) == 1)
    title = js("return document.querySelector('#threads tr.thread td.title b').textContent")
    assert title == "The broken build", title
    badges = js("return [...document.querySelectorAll('#threads tr.thread .badges .state')].map(b => b.dataset.state)")
    assert "failed" in badges, badges
    shared = driver.current_url
    driver.get(BASE + "/console#threads")
    driver.get(shared)
    wait.until(lambda d: len(rows()) == 1 and js("return document.querySelector('#filters select[name=state]').value") == "failed")
    print("filtered by state and text on the server; the URL keeps the filter")
    driver.get(BASE + "/console#threads")
    wait.until(lambda d: len(rows()) > 1)
    wait.until(lambda d: js("return document.querySelectorAll('.badges [data-state=running]').length") > 0)
    shot("console-conversations.png")
    print("conversations show titles, peers, badges and thread ids")

    # A running turn, cancelled from its thread.
    driver.get(BASE + "/console#thread/" + RUNNING)
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.turn [data-state="running"]')))
    # Its output as the agent writes it: a tick on stdout, a tock on stderr, newer ones coming.
    text = lambda sel: js(f"const p = document.querySelector('{sel}'); return p ? p.textContent : ''")
    wait.until(lambda d: "tick" in text(".live-stdout") and "tock" in text(".live-stderr"))
    before = text(".live-stdout")
    wait.until(lambda d: len(text(".live-stdout")) > len(before))
    print("the running turn's output shows live")
    js("const i = document.querySelector('input.cancel-by'); i.value = 'Ops Person';"
       "i.dispatchEvent(new Event('input'));")
    shot("console-turn.png")
    js("document.querySelector('button.cancel').click()")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '.turn [data-state="canceled"]')))
    by = js("return document.querySelector('.turn .canceled-by b').textContent")
    assert by == "Ops Person", by
    print("cancelled the running turn from its thread, by name")

    driver.get(BASE + "/console#thread/no-such-thread")
    wait.until(EC.presence_of_element_located((By.ID, "no-thread")))
    print("a missing thread says so")

    # Dead letters: the nav counts them; all selected, retried at once.
    driver.get(BASE + "/console#dead")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#dead-letters tr.dead-letter")))
    count = js("return document.getElementById('dead-count').textContent")
    n = js("return document.querySelectorAll('#dead-letters tr.dead-letter').length")
    assert n >= 2 and count == str(n), (count, n)
    shot("console-dead-letters.png")
    js("const a = document.getElementById('select-all'); a.click();")
    js("document.getElementById('retry-selected').click()")
    wait.until(lambda d: js("return document.querySelectorAll('#dead-letters tr.dead-letter').length") == 0)
    print(f"retried {n} dead letters as a selection; the nav counted them")

    # Config: peers without secrets; the reload state in no alarm colour.
    driver.get(BASE + "/console#config")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#peers tr[data-peer=tony]")))
    page = driver.page_source
    for secret in ("tony-secret", "mel-secret", SECRET):
        assert secret not in page, secret
    state = js("return document.getElementById('reload-state')")
    assert js("return arguments[0].className", state) != "error", "the reload state is red"
    shot("console-config.png")
    print("config shows peers, agents and routes, no secret")
finally:
    driver.quit()
