"""Checks in a real browser (Debian's chromium) that the console's thread shows the task a turn
became at a remote A2A agent: its id, its state and the artifacts taken from it.

Usage: console_remote_check.py BASE_URL ADMIN_SECRET THREAD_ID SHOT REMOTE_TASK_ID STATE ARTIFACT_ID...

Prints one line per step; the first failure raises.
"""
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from browser import chromium

BASE, SECRET, THREAD, SHOT, REMOTE_ID, STATE = sys.argv[1:7]
ARTIFACTS = sys.argv[7:]

driver = chromium()
wait = WebDriverWait(driver, 30)

try:
    driver.get(BASE + "/console")
    field = wait.until(EC.presence_of_element_located((By.ID, "secret")))
    field.send_keys(SECRET)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(EC.presence_of_element_located((By.ID, "threads")))
    driver.get(BASE + "/console#thread/" + THREAD)
    row = wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f'.turn tr[data-remote-task="{REMOTE_ID}"]')))
    print("the thread shows the remote task under its turn")
    assert row.find_element(By.CSS_SELECTOR, ".remote-id").text == REMOTE_ID
    state = row.find_element(By.CSS_SELECTOR, ".state.remote")
    assert state.get_attribute("data-state") == STATE, state.get_attribute("data-state")
    print("with its id and state", STATE)
    shown = [a.text for a in row.find_elements(By.CSS_SELECTOR, ".artifact")]
    assert shown == ARTIFACTS, (shown, ARTIFACTS)
    print("and its artifacts", shown)
    driver.save_screenshot(SHOT)
finally:
    driver.quit()
