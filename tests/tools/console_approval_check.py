"""Approves a held message from the web console in a real browser (Debian's chromium, through
chromium-driver).

Usage: console_approval_check.py BASE_URL ADMIN_SECRET MESSAGE_ID STARTED_ID SHOTS_DIR

Signs in, opens the approval queue, checks that the held message MESSAGE_ID is shown with its
thread, that deciding needs a name and rejecting needs a reason (refused in the browser), types the
approver's name, saves a screenshot of the queue (console-approvals.png), approves, and follows the
thread until the turn is done. Then rejects, with a reason, STARTED_ID: a message a local agent
started, held before it leaves, and finds its thread in the conversations list. Each step prints a line; the first failure raises.
"""
import pathlib
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browser import chromium

BASE, SECRET, MESSAGE, STARTED = sys.argv[1:5]
SHOTS = pathlib.Path(sys.argv[5])
SHOTS.mkdir(parents=True, exist_ok=True)
APPROVER = "Ada Reviewer"
ITEM = f'#approval-queue .approval[data-approval="{MESSAGE}"]'

driver = chromium(1000)
wait = WebDriverWait(driver, 30)


def js(script, *args):
    return driver.execute_script(script, *args)


def text_of(selector):
    """The text of the first element `selector` matches, or None (read by script: live updates
    re-render the view, so an element found a moment ago may be gone)."""
    return js("const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
              selector)


def click(selector):
    assert js("const e = document.querySelector(arguments[0]); if (!e) return false; "
              "e.click(); return true;", selector), f"nothing to click at {selector}"


try:
    driver.get(BASE + "/console")
    field = wait.until(EC.presence_of_element_located((By.ID, "secret")))
    field.send_keys(SECRET)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(EC.presence_of_element_located((By.ID, "threads")))
    print("signed in")

    wait.until(EC.element_to_be_clickable((By.ID, "nav-approvals"))).click()
    wait.until(EC.presence_of_element_located((By.ID, "approver")))
    wait.until(lambda d: text_of("#approvals-count") == "2"
               and d.find_element(By.ID, "approvals-count").is_displayed())
    print("the nav shows 2 items waiting")

    # The held message, prominently, and the whole thread it belongs to, with its turn waiting.
    wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'{ITEM} .msg.held[data-message="{MESSAGE}"] [data-state="awaiting_approval"]')))
    head = text_of(f"{ITEM} .approval-head")
    assert "inbound" in head and "tasks" in head, head
    held = text_of(f"{ITEM} pre.held-payload")
    assert "Ship the release" in held, held
    assert "Decide by" in text_of(f"{ITEM} .deadline")
    thread_id = js("return document.querySelector(arguments[0]).getAttribute('href')",
                   f"{ITEM} details.thread-of summary a")
    assert thread_id.startswith("#thread/"), thread_id
    # The thread: the earlier message of the conversation is there too, above the held one.
    shown = js("return [...document.querySelectorAll(arguments[0])].map(e => e.dataset.message)",
               f"{ITEM} .thread-body .msg[data-message]")
    assert len(shown) >= 2 and shown[-1] == MESSAGE, shown
    summary = text_of(f"{ITEM} details.thread-of summary")
    assert f"({len(shown)} messages," in summary, summary
    print(f"the held message waits in the queue, with its thread of {len(shown)} messages")

    # Deciding needs a name; rejecting needs a reason. Both refused in the browser.
    approver = driver.find_element(By.ID, "approver")
    approver.clear()
    js("localStorage.removeItem('agent-inbox.approver')")
    click(f"{ITEM} button.approve")
    wait.until(lambda d: "name" in (text_of("#approver-error") or ""))
    assert driver.find_elements(By.CSS_SELECTOR, ITEM), "the item went away without a name"
    print("deciding without a name is refused in the browser")
    approver.send_keys(APPROVER)
    assert js("return localStorage.getItem('agent-inbox.approver')") == APPROVER
    wait.until(lambda d: text_of("#approver-error") == "")

    # The queue before the decision, the whole page.
    height = js("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 140, 900), 2400))
    driver.save_screenshot(str(SHOTS / "console-approvals.png"))
    driver.set_window_size(1280, 1000)

    click(f"{ITEM} button.reject")
    wait.until(lambda d: "reason" in (text_of(f"{ITEM} .decide-error") or ""))
    assert driver.find_elements(By.CSS_SELECTOR, ITEM), "rejected without a reason"
    print("rejecting without a reason is refused in the browser")

    click(f"{ITEM} button.approve")
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ITEM))
    print(f"approved as {APPROVER}; the item left the waiting list")
    wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'#decided tr[data-approval="{MESSAGE}"] [data-state="approved"]')))
    row = text_of(f'#decided tr[data-approval="{MESSAGE}"]')
    assert APPROVER in row and "console" in row, row
    wait.until(lambda d: text_of("#approvals-count") == "1")
    print("it is listed as decided: approved, by the approver, via the console")

    # The name is remembered.
    driver.refresh()
    wait.until(EC.presence_of_element_located((By.ID, "approver")))
    assert driver.find_element(By.ID, "approver").get_attribute("value") == APPROVER
    print("the approver's name is remembered")

    # The thread: the turn ran, and the decision is shown on the message.
    driver.get(BASE + "/console" + thread_id)
    WebDriverWait(driver, 40).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'.msg[data-message="{MESSAGE}"] .turn [data-state="done"]')))
    note = text_of(f'.msg[data-message="{MESSAGE}"] .approval-note[data-approval-state="approved"]')
    assert note and APPROVER in note and "(console)" in note, note
    print("the thread shows the turn done, approved by the approver via the console")
    driver.save_screenshot(str(SHOTS / "console-approved-thread.png"))

    # The message the agent started: shown as the agent's own, rejected with a reason.
    driver.get(BASE + "/console#approvals")
    started = f'#approval-queue .approval[data-approval="{STARTED}"]'
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f"{started} pre.held-payload")))
    head = text_of(f"{started} .approval-head")
    assert "outbound message started by agent planner" in head, head
    what = text_of(f"{started} .held-what")
    assert what.startswith("Held message TASK to tony"), what
    # Its thread shows it, sent by the agent (it answers no message, so no message lists it).
    mine = f'{started} .thread-body .msg.reply.held[data-reply="{STARTED}"]'
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, mine)))
    assert text_of(f"{mine} .who") == "agent planner", text_of(f"{mine} .who")
    summary = text_of(f"{started} details.thread-of summary")
    assert "(0 messages, 1 sent)" in summary, summary
    driver.find_element(By.CSS_SELECTOR, f"{started} textarea.reason").send_keys("not this week")
    click(f"{started} button.reject")
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, started))
    wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'#decided tr[data-approval="{STARTED}"] [data-state="rejected"]')))
    row = text_of(f'#decided tr[data-approval="{STARTED}"]')
    assert "not this week" in row and APPROVER in row, row
    wait.until(lambda d: not d.find_element(By.ID, "approvals-count").is_displayed())
    print("the message the agent started: shown as the agent's, in its thread, rejected with a reason")

    # The conversations list has the thread the agent started (a new thread's id is its first
    # message's), though nothing came in on it.
    driver.get(BASE + "/console")
    row = f'#threads tr[data-thread="{STARTED}"]'
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, row)))
    assert "agent planner" in text_of(row) and "TASK" in text_of(row), text_of(row)
    print("the conversations list has the thread the agent started")
finally:
    driver.quit()
