// Clicking the toolbar button opens the example page in a tab.
chrome.action.onClicked.addListener(() => {
  chrome.tabs.create({ url: chrome.runtime.getURL("page.html") });
});
